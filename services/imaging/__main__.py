from services.imaging.app import build
from services.imaging.settings import ImagingSettings
from services.runtime.server import serve

serve(ImagingSettings(), build)
