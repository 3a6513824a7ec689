"""Attaching loaded programs: one module per attach kind, each through the
kernel's link API where it has one (closing the link fd detaches).

=================  ==================================================
module             sections
=================  ==================================================
``tracepoint``     ``tp/CAT/NAME`` (perf event + perf link)
``raw_tracepoint`` ``raw_tp/NAME``
``tracing``        ``tp_btf/``, ``fentry/``, ``fexit/``, ``lsm/``
``iterator``       ``iter/TARGET`` (link, then read the output)
``perf_event``     ``perf_event`` (a sampling event per CPU)
``uprobe``         ``uprobe/``, ``uretprobe/``, ``uprobe.multi/``
``usdt``           ``usdt/PATH:PROVIDER:NAME`` (as uprobes)
``kprobe``         ``kprobe/``, ``ksyscall/``, ``kprobe.multi/``
``socket_filter``  ``socket`` (SO_ATTACH_BPF)
``tcx``            ``tcx/``, ``tc``
``xdp``            ``xdp``
``cgroup``         ``cgroup/...``, ``cgroup_skb/...``, ``sockops``
``sk_lookup``      ``sk_lookup``, ``flow_dissector`` (netns links)
``netfilter``      ``netfilter``
=================  ==================================================

``auto`` maps a section name to its module; ``base`` holds :class:`Link`.
The collection (maps, programs) never attaches: ``BpfObject.attach`` does,
through ``auto``.
"""

from .base import Link, Links  # noqa: F401
