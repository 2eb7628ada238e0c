package lifecycle_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/lifecycle"
	"github.com/mrlb/mrlb/shared/logging"
)

const childMarker = "MRLB_LIFECYCLE_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childMarker); mode != "" {
		runChild(mode)
		return
	}
	os.Exit(m.Run())
}

type childConfig struct {
	config.NATS
	config.Ops
}

func (c childConfig) Validate() error       { return config.All(c.NATS, c.Ops) }
func (c childConfig) OpsConfig() config.Ops { return c.Ops }

func newChildConfig() *childConfig {
	c := &childConfig{}
	c.NATS.URL = config.DefaultNATSURL
	return c
}

func runFor(err error) func(context.Context, *slog.Logger) error {
	return func(context.Context, *slog.Logger) error { return err }
}

func runChild(mode string) {
	cfg := newChildConfig()
	switch mode {
	case "ok":
		lifecycle.Main("child", cfg, runFor(nil))
	case "cancelled":
		lifecycle.Main("child", cfg, runFor(context.Canceled))
	case "fail":
		lifecycle.Main("child", cfg, runFor(errors.New("boom")))
	case "varerror":
		lifecycle.Main("child", cfg, runFor(&config.VarError{Var: "REGIONAL_ENDPOINTS", Err: errors.New("bad")}))
	case "signal":
		lifecycle.Main("child", cfg, func(ctx context.Context, _ *slog.Logger) error {
			_, _ = os.Stdout.WriteString("ready\n")
			<-ctx.Done()
			return nil
		})
	}
	os.Exit(0)
}

func childCmd(t *testing.T, mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Dir = t.TempDir()
	cmd.Env = append(append(os.Environ(), childMarker+"="+mode, "METRICS_ADDR=off"), env...)
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, err)
	return 0
}

func TestMainExitCodes(t *testing.T) {
	tests := []struct {
		mode   string
		env    []string
		code   int
		stderr string
	}{
		{"ok", nil, 0, `"msg":"stopped"`},
		{"cancelled", nil, 0, `"msg":"stopped"`},
		{"fail", nil, 1, "boom"},
		{"varerror", nil, 2, "REGIONAL_ENDPOINTS"},
		{"ok", []string{"NATS_REPLICAS=9"}, 2, "NATS_REPLICAS"},
		{"ok", []string{"LOG_LEVEL=loud"}, 2, "LOG_LEVEL"},
	}
	for _, tc := range tests {
		t.Run(tc.mode+strings.Join(tc.env, ","), func(t *testing.T) {
			cmd := childCmd(t, tc.mode, tc.env...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			assert.Equal(t, tc.code, exitCode(t, cmd.Run()), stderr.String())
			assert.Contains(t, stderr.String(), tc.stderr)
		})
	}
}

func TestMainStopsOnSIGTERM(t *testing.T) {
	cmd := childCmd(t, "signal")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	buf := make([]byte, 6)
	_, err = io.ReadFull(out, buf)
	require.NoError(t, err)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		assert.Equal(t, 0, exitCode(t, err))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("child did not stop on SIGINT")
	}
}

func TestGroup(t *testing.T) {
	t.Run("all stop on cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var stopped atomic.Int32
		r := lifecycle.RunFunc(func(ctx context.Context) error { <-ctx.Done(); stopped.Add(1); return nil })
		done := make(chan error, 1)
		go func() { done <- lifecycle.Group(ctx, r, r, r) }()
		cancel()
		require.NoError(t, <-done)
		assert.Equal(t, int32(3), stopped.Load())
	})
	t.Run("first failure stops the others", func(t *testing.T) {
		boom := errors.New("boom")
		var stopped atomic.Int32
		wait := lifecycle.RunFunc(func(ctx context.Context) error { <-ctx.Done(); stopped.Add(1); return nil })
		fail := lifecycle.RunFunc(func(context.Context) error { return boom })
		err := lifecycle.Group(context.Background(), wait, fail, wait)
		assert.ErrorIs(t, err, boom)
		assert.Equal(t, int32(2), stopped.Load())
	})
	t.Run("none", func(t *testing.T) {
		require.NoError(t, lifecycle.Group(context.Background()))
	})
}

func TestServiceStartRun(t *testing.T) {
	srv := embeddednats.StartForTest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	opsAddr := ln.Addr().String()
	require.NoError(t, ln.Close())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := lifecycle.Start(ctx, "svc", srv.ClientURL(), opsAddr, logging.Discard())
	require.NoError(t, err)
	assert.Equal(t, "svc", s.Name)
	require.NotNil(t, s.JS)
	require.NotNil(t, s.Reg)

	// The ops port is bound at Start: a second service cannot take it.
	_, err = lifecycle.Start(ctx, "svc2", srv.ClientURL(), opsAddr, logging.Discard())
	require.Error(t, err)

	var ran atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, lifecycle.RunFunc(func(ctx context.Context) error { ran.Store(true); <-ctx.Done(); return nil }))
	}()

	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	status := func(path string) int {
		resp, err := client.Get("http://" + opsAddr + path)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for status("/healthz") != http.StatusOK {
		require.True(t, time.Now().Before(deadline), "ops listener never answered")
		time.Sleep(20 * time.Millisecond)
	}
	assert.Equal(t, http.StatusServiceUnavailable, status("/readyz"), "buckets not created yet")
	ectx, ecancel := context.WithTimeout(ctx, 20*time.Second)
	defer ecancel()
	require.NoError(t, bus.EnsureInfra(ectx, s.JS, bus.DefaultInfra()))
	assert.Equal(t, http.StatusOK, status("/readyz"))
	assert.Equal(t, http.StatusOK, status("/metrics"))

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	assert.True(t, ran.Load())
	assert.True(t, s.NC.IsClosed(), "NATS drained and closed")
}

func TestServiceStartOpsOff(t *testing.T) {
	srv := embeddednats.StartForTest(t)
	for _, addr := range []string{"", "off"} {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := lifecycle.Start(ctx, "svc", srv.ClientURL(), addr, logging.Discard())
		require.NoError(t, err)
		cancel()
		require.NoError(t, s.Run(ctx))
		assert.True(t, s.NC.IsClosed())
	}
}

func TestServiceStartBadOpsAddrClosesNATS(t *testing.T) {
	srv := embeddednats.StartForTest(t)
	_, err := lifecycle.Start(context.Background(), "svc", srv.ClientURL(), "256.0.0.1:"+strconv.Itoa(1), logging.Discard())
	require.Error(t, err)
}
