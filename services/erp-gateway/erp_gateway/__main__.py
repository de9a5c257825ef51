"""Run the ERP gateway: `python -m erp_gateway` (LOJASYNC_HTTP_HOST, LOJASYNC_HTTP_PORT)."""

from erp_gateway.app import main

main()
