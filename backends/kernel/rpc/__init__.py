"""Driving a kernel backend from another process: the contract over a byte stream.

* :mod:`~backends.kernel.rpc.protocol`: frames, reply statuses, the ops;
* :mod:`~backends.calls`: the contract's calls as data (and batches);
* :mod:`~backends.kernel.rpc.dispatch`: the serving side (wire request -> backend call);
* :mod:`~backends.kernel.rpc.channel`: the calling side of a stream socket;
* :mod:`~backends.kernel.rpc.client`: :class:`RemoteBackend`, a Backend whose calls
  are requests, and :class:`RemoteChild`, a forked child reached through its parent.

Two users: a forked child of a :class:`~backends.kernel.KernelBackend`
(:mod:`backends.kernel.fork`, over a socketpair) and the QEMU guest agent
(:mod:`backends.qemu`, over a virtio-serial port). The server side always runs a
kernel backend, hence the package's home. Stdlib, cffi and the contract only: all of
it runs in the guest initramfs too.
"""
