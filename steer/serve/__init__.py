"""``steer serve``: an OpenAI-compatible HTTP server whose requests each carry their own SAE
interventions and monitors.

- :mod:`steer.serve.engine` runs the model: one batched forward per step over every request in
  flight, requests joining and leaving between steps (:mod:`steer.serve.batch` keeps their
  left-padded KV cache), each with its own edits, monitors and sampling.
- :mod:`steer.serve.steering` turns a request's ``steer`` field into checked steps.
- :mod:`steer.serve.protocol` is the OpenAI request and response shapes; :mod:`steer.serve.app`
  the FastAPI routes; :mod:`steer.serve.guard` the API key, body limits and access log;
  :mod:`steer.serve.ray_app` the same app as a Ray Serve deployment.
"""
