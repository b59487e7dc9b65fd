"""`python -m provisioning`: serve the provisioning API and worker."""

from esim_core.service import serve

from provisioning.app import api, settings

serve(api, settings)
