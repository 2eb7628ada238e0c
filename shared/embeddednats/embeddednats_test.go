package embeddednats_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mrlb/mrlb/shared/embeddednats"
)

func TestStartForTest(t *testing.T) {
	s := embeddednats.StartForTest(t)
	assert.True(t, strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:"), s.ClientURL())
	assert.NotNil(t, s.NATS())
	assert.True(t, s.NATS().JetStreamEnabled())

	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t"})
	require.NoError(t, err)
}

func TestStartErrors(t *testing.T) {
	_, err := embeddednats.Start(embeddednats.Options{})
	require.Error(t, err, "StoreDir is required")
	for _, listen := range []string{"nohost", "127.0.0.1:abc", "a:b:c"} {
		_, err := embeddednats.Start(embeddednats.Options{StoreDir: t.TempDir(), Listen: listen})
		require.Error(t, err, listen)
	}
}

func TestStartListenPortZeroIsRandom(t *testing.T) {
	// NATS_LISTEN=127.0.0.1:0 must not fall back to the server's default
	// port 4222 (nats-server treats port 0 as "default").
	s, err := embeddednats.Start(embeddednats.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer s.Shutdown()
	assert.NotEqual(t, "nats://127.0.0.1:4222", s.ClientURL())
}

func TestStartOnGivenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())

	s, err := embeddednats.Start(embeddednats.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:" + strconv.Itoa(port), ServerName: "x"})
	require.NoError(t, err)
	defer s.Shutdown()
	assert.Equal(t, "nats://127.0.0.1:"+strconv.Itoa(port), s.ClientURL())
	assert.Equal(t, "x", s.NATS().Name())

	// A second server on the same port fails instead of hanging.
	_, err = embeddednats.Start(embeddednats.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:" + strconv.Itoa(port)})
	require.Error(t, err)
}

func TestRestartKeepsState(t *testing.T) {
	s := embeddednats.StartForTest(t)
	url := s.ClientURL()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	put := func(url string) {
		nc, err := nats.Connect(url)
		require.NoError(t, err)
		defer nc.Close()
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "keep", Storage: jetstream.FileStorage})
		require.NoError(t, err)
		_, err = kv.Put(ctx, "k", []byte("v"))
		require.NoError(t, err)
	}
	put(url)

	s2 := embeddednats.RestartForTest(t, s)
	assert.Equal(t, url, s2.ClientURL(), "same port")

	nc, err := nats.Connect(s2.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, "keep")
	require.NoError(t, err)
	e, err := kv.Get(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, "v", string(e.Value()))
}

// InProcessOnly opens no port: in-process clients work, nothing else can.
func TestInProcessOnly(t *testing.T) {
	s, err := embeddednats.Start(embeddednats.Options{StoreDir: t.TempDir(), InProcessOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if !s.InProcessOnly() {
		t.Fatal("InProcessOnly not reported")
	}
	nc, err := nats.Connect("", s.ConnectOption())
	if err != nil {
		t.Fatalf("in-process connect: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish("x", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if s.NATS().Addr() != nil {
		t.Fatalf("server listens on %v", s.NATS().Addr())
	}
}
