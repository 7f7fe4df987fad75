"""This machine and this process: listening sockets, CPU and memory limits (cgroups), systemd,
user and group, the garbage collector's settings, the event loop, Ctrl-C while a child starts.
Imports nothing above it."""
