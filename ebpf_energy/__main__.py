from ebpf_energy.entry import main

main()
