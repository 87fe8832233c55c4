package testutil

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server (Debian's redis-server package, installed by
// scripts/deps.sh) that a test started on a loopback port, without
// persistence. It is killed at cleanup.
type Redis struct {
	// Addr is 127.0.0.1:port, the same across Stop and Start.
	Addr string
	tb   testing.TB
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRedis starts a server on a free loopback port and waits until it
// answers PING. Without redis-server the test is skipped, or fails when
// XLB_REQUIRE_PRIVILEGED=1 (CI installs it).
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv(RequirePrivilegedEnv) == "1" {
			tb.Fatalf("redis-server not installed (scripts/deps.sh installs it) but %s=1", RequirePrivilegedEnv)
		}
		tb.Skip("skipped: redis-server not installed (scripts/deps.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("pick a port for redis: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	r := &Redis{Addr: addr, tb: tb}
	r.Start()
	tb.Cleanup(r.Stop)
	return r
}

// Start runs the server (again) on Addr and waits until it answers.
func (r *Redis) Start() {
	r.tb.Helper()
	_, port, _ := net.SplitHostPort(r.Addr)
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", r.tb.TempDir())
	if err := cmd.Start(); err != nil {
		r.tb.Fatalf("start redis-server: %v", err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(r.done)
	Eventually(r.tb, 10*time.Second, "redis-server on "+r.Addr+" to answer PING", r.ping)
}

// Stop kills the server and waits for it to exit; it is idempotent.
func (r *Redis) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// Do sends one inline command and returns the first line of the reply.
func (r *Redis) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	req := "*" + strconv.Itoa(len(args)) + "\r\n"
	for _, a := range args {
		req += "$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n"
	}
	if _, err := c.Write([]byte(req)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}

func (r *Redis) ping() bool {
	line, err := r.Do("PING")
	return err == nil && line == "+PONG\r\n"
}

// Pause stops the server process (SIGSTOP): connections stay open and
// nothing is answered, as when Redis is overloaded. Resume continues it.
func (r *Redis) Pause() { _ = r.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (r *Redis) Resume() { _ = r.cmd.Process.Signal(syscall.SIGCONT) }
