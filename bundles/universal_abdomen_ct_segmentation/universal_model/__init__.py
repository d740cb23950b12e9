"""Code of the CLIP-Driven Universal Model bundle (abdominal CT, 32 classes).

The package name is unique across AtlasForge bundles so that configs can
``$import universal_model`` when the bundle is run from its own folder.
"""
