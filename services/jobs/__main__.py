from services.jobs.app import build
from services.jobs.settings import JobsSettings
from services.runtime.server import serve

serve(JobsSettings(), build)
