"""Curation: sources, SWHIDs, language, licences, filters, PII, opt-out, manifest."""
