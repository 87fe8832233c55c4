package bgp

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/xlb-project/xlb/internal/testutil"
)

// receiver is a plain GoBGP server standing in for a router: it listens on
// 127.0.0.1 and accepts a session from the speaker at 127.0.0.2. The
// end-to-end proof against a real router (FRR) is in internal/lab.
type receiver struct {
	srv  *server.BgpServer
	port uint16
}

func newReceiver(t *testing.T) *receiver { return newReceiverWith(t, "") }

// newReceiverWith requires TCP MD5 signatures with password when not "".
func newReceiverWith(t *testing.T, password string) *receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := server.NewBgpServer()
	go srv.Serve()
	ctx := context.Background()
	err = srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "127.0.0.1", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	fam := func(afi api.Family_Afi) *api.AfiSafi {
		return &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}
	}
	err = srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.2", PeerAsn: 65001, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 3, KeepaliveInterval: 1}},
		AfiSafis:  []*api.AfiSafi{fam(api.Family_AFI_IP), fam(api.Family_AFI_IP6)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &receiver{srv: srv, port: uint16(port)}
}

// received is one route as the receiver holds it.
type received struct {
	nextHop     netip.Addr
	communities []uint32
	asPath      string
}

func (r *receiver) routes(t *testing.T) map[netip.Prefix]received {
	t.Helper()
	out := map[netip.Prefix]received{}
	for _, fam := range []bgppkt.Family{bgppkt.RF_IPv4_UC, bgppkt.RF_IPv6_UC} {
		err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam},
			func(n bgppkt.NLRI, paths []*apiutil.Path) {
				p, err := netip.ParsePrefix(n.String())
				if err != nil {
					t.Errorf("nlri %q: %v", n, err)
					return
				}
				var rc received
				for _, a := range paths[0].Attrs {
					switch a := a.(type) {
					case *bgppkt.PathAttributeNextHop:
						rc.nextHop = a.Value
					case *bgppkt.PathAttributeMpReachNLRI:
						rc.nextHop = a.Nexthop
					case *bgppkt.PathAttributeCommunities:
						rc.communities = a.Value
					case *bgppkt.PathAttributeAsPath:
						rc.asPath = a.String()
					}
				}
				out[p] = rc
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func startSpeaker(t *testing.T, port uint16) *Speaker { return startSpeakerWith(t, port, "") }

func startSpeakerWith(t *testing.T, port uint16, password string) *Speaker {
	t.Helper()
	cfg := Config{
		LocalAS: 65001, RouterID: "127.0.0.2", NextHopV6: "2001:db8:1::2",
		Communities: []string{"65001:100"},
		Peers: []PeerConfig{{
			Address: "127.0.0.1", AS: 65000, Port: port, LocalAddress: "127.0.0.2", HoldTime: 3 * time.Second,
			Password: password,
		}},
	}
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func TestSpeakerAnnouncesAndWithdraws(t *testing.T) {
	r := newReceiver(t)
	s := startSpeaker(t, r.port)
	ctx := context.Background()
	testutil.Eventually(t, 20*time.Second, "session established", func() bool {
		ss, err := s.Sessions(ctx)
		return err == nil && len(ss) == 1 && ss[0].Established()
	})
	ss, _ := s.Sessions(ctx)
	if ss[0].HoldTime != 3*time.Second || ss[0].Peer != "127.0.0.1" || ss[0].AS != 65000 {
		t.Fatalf("session = %+v, want peer 127.0.0.1 AS 65000 hold 3s", ss[0])
	}

	v4 := netip.MustParseAddr("203.0.113.10")
	v6 := netip.MustParseAddr("2001:db8:f::10")
	if err := s.Sync(map[netip.Addr]bool{v4: false, v6: false}); err != nil {
		t.Fatal(err)
	}
	p4, p6 := netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128)
	var got map[netip.Prefix]received
	testutil.Eventually(t, 10*time.Second, "both host routes received", func() bool {
		got = r.routes(t)
		return len(got) == 2
	})
	// The IPv4 next hop defaults to the session's local address.
	if rc := got[p4]; rc.nextHop != netip.MustParseAddr("127.0.0.2") || !slices.Equal(rc.communities, []uint32{65001<<16 | 100}) {
		t.Fatalf("%s received as %+v, want next hop 127.0.0.2 and community 65001:100", p4, rc)
	}
	if rc := got[p6]; rc.nextHop != netip.MustParseAddr("2001:db8:1::2") {
		t.Fatalf("%s received as %+v, want next hop 2001:db8:1::2", p6, rc)
	}
	if rc := got[p4]; !strings.Contains(rc.asPath, " 65001}") {
		t.Fatalf("AS path %q, want the speaker's AS 65001 alone", rc.asPath)
	}

	// Graceful shutdown on the IPv4 VIP, IPv6 withdrawn.
	if err := s.Sync(map[netip.Addr]bool{v4: true}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "GRACEFUL_SHUTDOWN on the IPv4 route, IPv6 withdrawn", func() bool {
		got = r.routes(t)
		_, has6 := got[p6]
		return !has6 && slices.Contains(got[p4].communities, GracefulShutdown)
	})
	if a := s.Announced(); len(a) != 1 || a[0].VIP != v4 || !a[0].GracefulShutdown {
		t.Fatalf("Announced() = %+v", a)
	}
	if c := s.Counts(); c.Announcements != 3 || c.Withdrawals != 1 {
		t.Fatalf("Counts() = %+v, want 3 announcements, 1 withdrawal", c)
	}
	// Syncing the same set again changes nothing.
	if err := s.Sync(map[netip.Addr]bool{v4: true}); err != nil || s.Counts().Announcements != 3 {
		t.Fatalf("repeat Sync: %v, %+v", err, s.Counts())
	}

	if err := s.Sync(nil); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "all routes withdrawn", func() bool { return len(r.routes(t)) == 0 })
}

func TestSpeakerStopDropsRoutes(t *testing.T) {
	r := newReceiver(t)
	s := startSpeaker(t, r.port)
	v4 := netip.MustParseAddr("203.0.113.11")
	if err := s.Sync(map[netip.Addr]bool{v4: false}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "route received", func() bool { return len(r.routes(t)) == 1 })
	s.Stop()
	testutil.Eventually(t, 10*time.Second, "route gone after the session closed", func() bool { return len(r.routes(t)) == 0 })
	if err := s.Sync(map[netip.Addr]bool{v4: false}); err == nil {
		t.Fatal("Sync after Stop succeeded")
	}
	if _, err := s.Sessions(context.Background()); err == nil {
		t.Fatal("Sessions after Stop succeeded")
	}
}

func TestSpeakerIPv6NeedsNextHopOverIPv4(t *testing.T) {
	cfg := validConfig()
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.path(netip.MustParseAddr("2001:db8:f::1"), false); err != ErrNoNextHopV6 {
		t.Fatalf("path for an IPv6 VIP over an IPv4 peer without next_hop_v6: %v, want ErrNoNextHopV6", err)
	}
}

// TestSpeakerPassword: a router that requires TCP MD5 signatures (RFC 2385)
// drops unsigned segments, so the session comes up only if the speaker
// signs with the configured password.
func TestSpeakerPassword(t *testing.T) {
	r := newReceiverWith(t, "xlb-secret")
	s := startSpeakerWith(t, r.port, "xlb-secret")
	testutil.Eventually(t, 20*time.Second, "session established with TCP MD5", func() bool {
		ss, err := s.Sessions(context.Background())
		return err == nil && len(ss) == 1 && ss[0].Established()
	})
}
