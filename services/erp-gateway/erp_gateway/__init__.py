"""The ERP gateway: changes pushed by the ERP go in, resolved store changes go out to it."""
