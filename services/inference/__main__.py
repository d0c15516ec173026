from services.inference.app import build
from services.inference.settings import InferenceSettings
from services.runtime.server import serve

serve(InferenceSettings(), build)
