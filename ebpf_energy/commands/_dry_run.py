"""``load --dry-run``: the finished object, as a person reads it, without root.

Prints what :func:`~ebpf_energy.loader.prepare.prepare` made: each map as
BPF_MAP_CREATE will be asked for it, and each program's final instructions
(C source lines from line_info between them), with the relocations and
CO-RE answers that produced them. Only the map fds are missing: the kernel
hands those out at load.
"""

from ebpf_energy.commands._usage import echo


def print_prepared(prepared, out) -> None:
    d = prepared.to_dict()
    echo(f"{d['object']}: prepared for {d['target']} (a dry run: nothing was loaded)", file=out)
    if d["btf_bytes"] is not None:
        echo(f"object BTF: {d['btf_bytes']} bytes after sanitising for the kernel", file=out)
    echo("\nmaps (as BPF_MAP_CREATE will ask for them):", file=out)
    for m in d["maps"]:
        extra = []
        if m["btf_value_type_id"] or m["btf_key_type_id"]:
            extra.append(f"btf key/value ids {m['btf_key_type_id']}/{m['btf_value_type_id']}")
        if m["initial_bytes"] is not None:
            extra.append(f"{m['initial_bytes']} initial bytes" + (", then frozen" if m["freeze"] else ""))
        if m["pin_path"]:
            extra.append(f"pinned at {m['pin_path']}")
        if m["inner"]:
            i = m["inner"]
            extra.append(f"inner maps: {i['type']}, key {i['key_size']} B, value {i['value_size']} B, "
                         f"max_entries {i['max_entries']}")
        if m["map_extra"]:
            extra.append(f"map_extra {m['map_extra']:#x}")
        echo(f"  {m['name']} ({m['kernel_name']}): {m['type']}, key {m['key_size']} B, value "
                   f"{m['value_size']} B, max_entries {m['max_entries']}, flags {m['flags']:#x}"
                   + (f"; {'; '.join(extra)}" if extra else ""), file=out)
        for note in m["notes"]:
            echo(f"      {note}", file=out)
    for p, prog in zip(d["programs"], prepared.programs.values()):
        attach = f", attach target {p['attach_target']} = kernel BTF id {p['attach_btf_id']}" \
            if p["attach_btf_id"] else ""
        if p["expected_attach_type"]:
            attach += f", expected attach type {p['expected_attach_type_name']}"
        if p["prog_flags"]:
            attach += f", flags {'|'.join(p['prog_flags'])}"
        echo(f"\nprogram {p['name']} (SEC(\"{p['section']}\"), {p['type']}, license {p['license']!r}"
                   f"{attach}): {len(prog.insns) // 8} instructions", file=out)
        if p["core"]:
            echo("  CO-RE:", file=out)
            for c in p["core"]:
                echo(f"    {c['section']} insn {c['insn']}: {c['kind']} {c['local']} -> {c['outcome']}",
                           file=out)
        if p["relocations"]:
            echo("  relocations:", file=out)
            for r in p["relocations"]:
                echo(f"    {r}", file=out)
        echo("  instructions:", file=out)
        lines = {i: rec for i, rec in prog.line_info}
        last_source = None
        for i, text in prog.disassembly():
            rec = lines.get(i)
            source = (rec.source or "").strip() if rec is not None else None
            if source and source != last_source:
                echo(f"    ; {source}  [{rec.file_name.rsplit('/', 1)[-1]}:{rec.line}]", file=out)
                last_source = source
            echo(f"    {i:>5}: {text}", file=out)
