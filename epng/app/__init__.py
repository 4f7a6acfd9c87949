"""The web app (``epng app``): ground a narrative in an uploaded image, in the browser.

`epng.app.render` and `epng.app.examples` need only numpy and Pillow; `epng.app.server`
needs the optional ``gradio`` (``pip install "epng[app]"``), so it is imported on its own.
"""
