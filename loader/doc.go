// Package loader loads the XDP datapath (bpf/lb.c, bpf/decap.c), attaches it to
// interfaces and gives the control plane typed access to its maps. It is the
// only package of xlb that imports github.com/cilium/ebpf.
//
// # Objects
//
// Load creates every map and the xdp_lb program. With Options.PinDir set, the
// maps are pinned under that bpffs directory (mounted when missing) and a later
// Load adopts them, so a restarted or upgraded daemon keeps the flow table,
// the VIPs, backends, tables and counters. Attach attaches xdp_lb through a
// bpf_link; with a PinDir the link is pinned as link_IFNAME and a later Attach
// replaces the program atomically through it (link update), which is how a
// new binary takes over without dropping a packet. Close releases file
// descriptors and keeps pins; Cleanup removes the pins, which detaches.
//
// # Maps written by the control plane
//
//   - VIPs: VIPKey (address, port or 0 for any port, protocol) → VIP (ID, mode,
//     hashing option, table size). PutVIP, RemoveVIP.
//   - Backends: backend ID → Backend (address, next-hop MAC, usable for new and
//     for established flows). PutBackend, PutBackends (many in one map
//     update and one generation bump), RemoveBackend. IDs run from 1 to
//     Options.MaxBackends-1 (default MaxBackends); 0 marks an empty table
//     slot.
//   - Tables: one hash-of-maps per supported table size; VIP ID → a one-entry
//     array whose value is the whole Maglev table (backend ID per slot).
//     SetTable builds a new inner map and swaps it in, so a packet sees either
//     the old table or the new one, never a mix. PatchTable rewrites single
//     slots of the installed table in place (inner maps are mmapable), each
//     slot one atomic 32-bit store: a packet reads its slot's old or new
//     backend, and a new flow arriving during a patch may follow either
//     table. PatchTables patches the tables of many VIPs in one call,
//     reading which inner map each VIP has in one batch lookup.
//   - Config: balancer MAC, outer source prefixes, flow hash seed, UDP flow
//     timeout, MTU towards the backends, ICMP "too big" rate limit (a map of
//     its own, icmp_limits). SetConfig. A VIP packet that exceeds the MTU
//     once encapsulated is answered with ICMP "fragmentation needed" /
//     ICMPv6 "packet too big" (XDP_TX, bpf/icmp.h).
//   - VIP filter: a bit per hash of a VIP address, kept by PutVIP and
//     RemoveVIP, so that packets to other addresses leave after one read.
//
// The datapath writes the flow table (5-tuple → backend, VIP ID and mode;
// an LRU hash, global by default), the flow cache (a direct-mapped copy of
// flow entries and of their backends' address and MAC, read first, valid
// while their generation is current: PutBackend and RemoveBackend bump it;
// a TCP SYN's choice waits there, marked pending, until the flow's next
// packet puts it into the flow table, so a SYN flood evicts no flow) and
// the per-CPU counters, per backend (BackendCounters) and per drop
// reason (Drops). A VIP's traffic is its backends' counters plus what its
// removed backends left (RetireBackend, RetiredCounters). RemoveVIP, and
// PutVIP changing a VIP's ID or mode, delete that VIP's flows and bump the
// generation too.
//
// # Backend hosts
//
// AttachDecapWith attaches xdp_decap with a netlink attachment (it stays
// without a process or pin) and fills its trust maps from DecapOptions:
// the balancer prefixes outer sources must lie in, and optionally the
// outer destinations accepted. ReadDecap reads back from the kernel what is
// attached to an interface, its trust and its counters (DecapReasons).
//
// Ordering rule (DESIGN.md, Backend lifecycle): put a backend before any table
// slot names it; install a table without it before removing it.
package loader

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// Named errors a caller can act on.
var (
	// ErrInvalid wraps every rejection of bad input (the message names the
	// field, the value and what is allowed); nothing was changed.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: the VIP, backend or pinned object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrIncompatiblePin: a pinned map under PinDir does not match what this
	// binary expects (e.g. another flow table size); Cleanup and load again,
	// which loses the flow table.
	ErrIncompatiblePin = errors.New("pinned map is incompatible")
	// ErrVerifier: the kernel refused a program; with Options.Verbose the error
	// text holds the full verifier log.
	ErrVerifier = errors.New("program rejected by the verifier")
	// ErrNotAttached: Detach or DetachDecap found nothing attached.
	ErrNotAttached = errors.New("not attached")
	// ErrLiveFramesRefused: the kernel refused BPF_PROG_RUN in live-frames
	// mode with EPERM, as a 6.18 build seen here does even for root;
	// Rig.RunSocket injects the same frames through a packet socket instead.
	ErrLiveFramesRefused = errors.New("kernel refused BPF_PROG_RUN live frames")
)

// Limits of the maps. Backend and VIP IDs index arrays.
const (
	MaxVIPs = 1024 // VIP IDs 0..MaxVIPs-1; also the number of VIP keys
	// MaxBackends is the default of Options.MaxBackends: backend IDs
	// 1..MaxBackends-1; 0 marks an empty slot.
	MaxBackends = 4096
	// MinMaxBackends and MaxMaxBackends bound Options.MaxBackends.
	MinMaxBackends = 2
	MaxMaxBackends = 1 << 20
	// DefaultFlowTableSize is the number of flows the global LRU remembers.
	DefaultFlowTableSize = 1 << 20
	// DefaultHashSeed is the fixed flow hash seed. Every balancer of a fleet
	// must use the same seed so that they pick the same slot for a flow.
	DefaultHashSeed = 0x786c6221
	// DefaultUDPTimeout: a UDP flow idle this long selects its backend again.
	DefaultUDPTimeout = 30 * time.Second
	// DefaultMTU is the largest IP packet, after encapsulation, sent towards
	// the backends.
	DefaultMTU = 1500
	// DefaultICMPRate is how many ICMP "too big" answers each CPU sends per
	// second at most, and DefaultICMPBurst how many it may send at once
	// after a quiet time (the defaults of Linux's icmp_msgs_per_sec and
	// icmp_msgs_burst, per CPU here).
	DefaultICMPRate  = 1000
	DefaultICMPBurst = 50
)

// SupportedTableSizes are the Maglev table sizes the datapath holds (primes).
// All inner maps of one hash-of-maps share one value size, so there is one
// outer map per size.
var SupportedTableSizes = []uint32{251, 4093, 65537}

// Options configure Load.
type Options struct {
	// PinDir is a bpffs directory for the maps and links, mounted when no
	// bpffs is there. "" pins nothing: everything goes away on Close.
	PinDir string
	// Verbose puts the full verifier log into load errors.
	Verbose bool
	// FlowTableSize is the LRU flow table's capacity. Default
	// DefaultFlowTableSize. Changing it for an existing pin gives
	// ErrIncompatiblePin.
	FlowTableSize uint32
	// PerCPULRU gives the flow table one LRU list per CPU
	// (BPF_F_NO_COMMON_LRU): still one table that every CPU finds a flow
	// in, but an insert takes no global lock and evicts from its own CPU's
	// list. Default off (one common LRU list): measured no faster, and the
	// kernel gives each CPU only its share of the table's free entries.
	// Changing it for an existing pin gives ErrIncompatiblePin.
	PerCPULRU bool
	// MaxBackends is the number of backend IDs (the size of the maps a
	// backend ID indexes): IDs 1..MaxBackends-1 are usable. Default
	// MaxBackends; allowed MinMaxBackends..MaxMaxBackends. Each ID costs
	// 24 bytes plus 16 bytes per possible CPU of kernel memory. Changing
	// it for an existing pin gives ErrIncompatiblePin.
	MaxBackends uint32
}

// Mode is how a VIP's packets reach the backend.
type Mode uint8

const (
	// ModeIPIP encapsulates in an outer IPv4 (or IPv6) header towards the
	// backend's address.
	ModeIPIP Mode = iota
	// ModeL2DSR rewrites the Ethernet addresses only; the backend must be on
	// the balancer's L2 segment.
	ModeL2DSR
)

// VIPKey identifies a VIP. Port 0 matches every port of the address and
// protocol that no port-specific VIP matches.
type VIPKey struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8 // 6 (TCP) or 17 (UDP)
}

// VIP is the datapath's view of one VIP.
type VIP struct {
	ID   uint32 // 0..MaxVIPs-1, chosen by the caller; indexes counters and tables
	Mode Mode
	// HashSrcIPOnly selects the backend by the client address alone, so a
	// client sticks to one backend across its ports.
	HashSrcIPOnly bool
	// Stateless (UDP VIPs only) keeps no flow state: each datagram goes
	// where the Maglev table says, with no flow-table lookup or insert
	// (one-packet scheduling, for request/response traffic such as DNS). A
	// table change moves the 5-tuples of the slots it moves, and a
	// draining backend gets no more datagrams.
	Stateless bool
	// TableSize is one of SupportedTableSizes; SetTable must be given a table
	// of this length.
	TableSize uint32
}

// Backend is the datapath's view of one backend.
type Backend struct {
	Addr netip.Addr // same family as the VIPs that use it
	// MAC is the next hop: the backend itself for L2 DSR, the next hop
	// towards it for IPIP.
	MAC               net.HardwareAddr
	UsableNew         bool // may receive new flows
	UsableEstablished bool // keeps its established flows
}

// Config is the datapath-wide configuration. Zero fields take their default.
type Config struct {
	// SourceMAC is written as source of every forwarded frame: the MAC of the
	// interface xdp_lb is attached to. Required.
	SourceMAC net.HardwareAddr
	// OuterSource4 and OuterSource6 are the prefixes outer source addresses
	// of IPIP packets are taken from, varied per flow by the flow hash (the
	// low 32 bits at most for IPv6). Without one, IPIP packets of that
	// family are dropped (reason no_source).
	OuterSource4, OuterSource6 netip.Prefix
	// HashSeed seeds the flow hash. Default DefaultHashSeed.
	HashSeed uint32
	// UDPTimeout: a UDP flow idle longer selects again. Default
	// DefaultUDPTimeout.
	UDPTimeout time.Duration
	// MTU is the largest IP packet (outer header included) sent towards
	// backends. A larger VIP packet is answered with ICMP "fragmentation
	// needed" (IPv4 with DF) or ICMPv6 "packet too big" naming MTU less the
	// outer header (20 or 40 bytes; MTU itself for L2 DSR; never below 1280
	// for IPv6), reason icmp_too_big; see ICMPRate. Default DefaultMTU.
	MTU uint16
	// ICMPRate is the most ICMP "too big" answers each CPU sends per
	// second; beyond it too big packets are dropped (reason icmp_limited).
	// Default DefaultICMPRate; negative sends none (reason too_big).
	ICMPRate int
	// ICMPBurst is how many answers a CPU may send at once after a quiet
	// time. Default DefaultICMPBurst.
	ICMPBurst int
	// EgressIfindex, if not 0, is the interface (in the network namespace
	// of the attached one) that forwarded packets leave through, by
	// XDP_REDIRECT over a devmap, for balancers whose backends sit behind
	// another interface; SourceMAC should then be its MAC. 0 (default)
	// sends them back out of the receiving interface (XDP_TX).
	EgressIfindex int
}

// Counters are packets and bytes summed over CPUs.
type Counters struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}
