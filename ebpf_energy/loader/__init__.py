"""A pure-Python BPF loader: ELF -> BTF -> CO-RE -> maps -> programs -> links.

It needs only pyelftools and cffi, and never imports the energy side of
ebpf-energy. ``BpfObject`` (in :mod:`ebpf_energy.loader.object`) is the entry
point; everything that needs no kernel (ELF, BTF, CO-RE) is pure data.
"""
