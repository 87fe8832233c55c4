package loader

// The BPF objects and their Go bindings are generated from bpf/ and
// committed, so building xlb needs no clang. `make generate` reruns this;
// `make check-generated` fails when the result differs from what is
// committed. The include path is Debian's multiarch directory for the
// kernel's asm headers.
//go:generate go tool bpf2go -cc clang -target bpfel -type vip_key -type vip_meta -type backend -type flow_key -type flow -type config -type counters -type flow_cache_slot -type icmp_budget -type icmp_limit lb ../bpf/lb.c -- -I/usr/include/x86_64-linux-gnu -mcpu=v3 -Wall -Werror
//go:generate go tool bpf2go -cc clang -target bpfel -type trust_config -type prefix4 -type prefix6 -type trust_dest decap ../bpf/decap.c -- -I/usr/include/x86_64-linux-gnu -mcpu=v3 -Wall -Werror
//go:generate go tool bpf2go -cc clang -target bpfel -no-global-types swap ../bpf/xdp_swap.c -- -I/usr/include/x86_64-linux-gnu -mcpu=v3 -Wall -Werror
