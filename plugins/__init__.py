"""Built-in steer plugins, installed as the package ``steer_plugins`` and registered through the ``steer`` entry-point group like any third-party plugin."""
