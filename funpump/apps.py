from django.apps import AppConfig


class FunPumpConfig(AppConfig):
    """The project package is also the app that owns wallet sign-in."""

    name = "funpump"
    verbose_name = "FunPump"
