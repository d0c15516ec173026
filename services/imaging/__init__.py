"""The imaging worker: resize, crop, rotate, flip and convert images with Pillow."""
