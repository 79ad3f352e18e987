"""Display: stretches and PNG previews."""
