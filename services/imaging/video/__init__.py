"""Frames out of videos: seek, pick, sheet and preview.

Every entry point opens the video through `decode.Video` (header probed and checked against the
limits first), seeks to the keyframe before each position and decodes forward from there, so the
cost is a few GOPs per position whatever the video's length: a two-hour video is never decoded
whole. These functions are pure (bytes or a path in, Pillow images out) and run in the imaging
worker's isolated children like the image decoders.
"""
