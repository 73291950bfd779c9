"""Raw inputs -> model inputs, reading and writing Hugging Face's processor files.

Every processor follows one protocol (:mod:`polyformer.processors.base`): ``from_pretrained``,
``save_pretrained``, ``__call__``. :class:`AutoTokenizer` / :class:`AutoProcessor` pick the class
a model folder names. Text goes through Hugging Face's ``tokenizers`` (GPT-2's byte-level BPE,
BERT's WordPiece, CLIP's BPE); images through Pillow + NumPy.
"""

from polyformer.processors.auto import AutoImageProcessor, AutoProcessor, AutoTokenizer
from polyformer.processors.base import Processor, register_processor
from polyformer.processors.clip import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer
from polyformer.processors.combined import CombinedProcessor
from polyformer.processors.image import ImageGPTProcessor, ImageProcessor, fit_palette, load_image, load_image_processor
from polyformer.processors.text import TextTokenizer, train_bpe
from polyformer.processors.tokenizer import BatchEncoding, TokenizerBase
from polyformer.processors.video import VideoProcessor, load_video
from polyformer.processors.wordpiece import WordPieceTokenizer

__all__ = ["AutoImageProcessor", "AutoProcessor", "AutoTokenizer", "BatchEncoding", "CLIPImageProcessor", "CLIPProcessor",
           "CLIPTokenizer", "CombinedProcessor",
           "ImageGPTProcessor", "ImageProcessor", "Processor", "TextTokenizer", "TokenizerBase", "VideoProcessor",
           "WordPieceTokenizer",
           "fit_palette", "load_image", "load_image_processor", "load_video", "register_processor", "train_bpe"]
