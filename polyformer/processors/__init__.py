"""Raw inputs -> model inputs: text through Hugging Face's ``tokenizers`` (GPT-2 byte-level BPE) and
images (Pillow + NumPy), following Hugging Face's processor configs."""

from polyformer.processors.image import ImageGPTProcessor, ImageProcessor, fit_palette, load_image, load_image_processor
from polyformer.processors.text import TextTokenizer, train_bpe

__all__ = ["ImageGPTProcessor", "ImageProcessor", "TextTokenizer", "fit_palette", "load_image", "load_image_processor",
           "train_bpe"]
