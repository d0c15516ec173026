from services.metadata.app import build
from services.metadata.settings import MetadataSettings
from services.runtime.server import serve

serve(MetadataSettings(), build)
