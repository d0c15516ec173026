from services.gateway.app import build
from services.gateway.settings import GatewaySettings
from services.runtime.server import serve

serve(GatewaySettings(), build)
