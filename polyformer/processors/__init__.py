"""Raw inputs -> model inputs: images (Pillow + NumPy), following Hugging Face's processor configs."""

from polyformer.processors.image import ImageGPTProcessor, ImageProcessor, fit_palette, load_image, load_image_processor

__all__ = ["ImageGPTProcessor", "ImageProcessor", "fit_palette", "load_image", "load_image_processor"]
