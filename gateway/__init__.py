"""The gateway: the ``/ws`` consumer, its URL routing and the HTTP pages of the project.

It sits on top: it imports the apps and turns their results into protocol frames.
"""
