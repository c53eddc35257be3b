"""The web app's parts that are not layout: rendering (``render``), downloads (``export``) and process settings
for serving on a small machine (``serving``). ``app.py`` lays out the page and launches it."""
