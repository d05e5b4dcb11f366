"""Wallet sign-in: a challenge signed with the wallet's ed25519 key buys a token and a session."""
