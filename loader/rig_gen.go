package loader

// The packet-rate rig's programs (bpf/rig_*.c), generated like the
// datapath's and committed with it.
//go:generate go tool bpf2go -cc clang -target bpfel -no-global-types rigcount ../bpf/rig_count.c -- -I/usr/include/x86_64-linux-gnu -mcpu=v3 -Wall -Werror
//go:generate go tool bpf2go -cc clang -target bpfel -no-global-types riggen ../bpf/rig_gen.c -- -I/usr/include/x86_64-linux-gnu -mcpu=v3 -Wall -Werror
