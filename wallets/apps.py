from django.apps import AppConfig


class WalletsConfig(AppConfig):
    """Wallet sign-in: challenges signed with ed25519, bearer tokens and sessions."""

    name = "wallets"
    verbose_name = "Wallets"
