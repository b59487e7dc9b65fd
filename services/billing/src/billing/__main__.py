"""`python -m billing`: serve the billing API and worker."""

from esim_core.service import serve

from billing.app import api, settings

serve(api, settings)
