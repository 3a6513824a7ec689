from ebpf_energy.cli import main

main()
