package proxy

import (
	"testing"

	"github.com/xlb-project/xlb/proxy/config"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := config.Load("../testdata/proxy/example.yaml")
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if len(c.Listeners) != 1 || len(c.Pools) != 2 || len(c.Routes) != 5 {
		t.Fatalf("example config: got %d listeners, %d pools, %d routes", len(c.Listeners), len(c.Pools), len(c.Routes))
	}
	// Defaults are filled in.
	if c.Routes[0].Respond.ContentType == "" || c.Pools[0].Backends[0].Weight != 1 {
		t.Errorf("defaults not applied: %+v", c.Routes[0].Respond)
	}
	if _, err := New(c, Options{}); err != nil {
		t.Fatalf("build proxy from example: %v", err)
	}
}
