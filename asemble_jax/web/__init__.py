"""The clinician web page (pip extra `web`): a FastAPI app (app.py) that classifies uploaded MRI slices, series
and volumes with a trained workdir and shows class, probability and Grad-CAM, in static/ (plain HTML, CSS, JS)."""
