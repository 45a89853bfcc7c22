"""The suite inside a QEMU guest: pytest runs there, the host orchestrates.

With a ``qemu:ARCH`` backend the cases that use the ``backend`` fixture do not cross
the agent channel call by call: the host boots the guest, ships it the test files,
and a pytest session in the guest (:mod:`harness.guestrun.worker`, on the guest's
``kernel`` backend) runs them where the ioctls are, one case per host command,
streaming each case's reports back. The host (:mod:`harness.guestrun.host`) replays
the reports into its own session, so the terminal, ``-k``, ``-x``, KTAP, JUnit,
known issues and the C lineup see exactly what an in-process run shows. Scenarios
never know where they run: they see the backend contract either way.
"""
