"""`python -m accounts`: serve the accounts API and worker."""

from esim_core.service import serve

from accounts.app import api, settings

serve(api, settings)
