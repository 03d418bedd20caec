package main_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// pushResult is one push of the concurrent stream in TestCrashKill9.
type pushResult struct {
	repo, tag string
	im        image
	acked     bool // the manifest PUT answered 201
}

// TestCrashKill9 kills the real binary with SIGKILL while pushes stream in
// and an upload is half done, restarts it on the same data dir, and checks
// what a client sees: every acknowledged push pulls back byte for byte, the
// interrupted upload session is BLOB_UPLOAD_UNKNOWN, and no blob whose
// upload was cut short is served.
func TestCrashKill9(t *testing.T) {
	const (
		workers   = 4
		perWorker = 30 // images made up front: t.Fatal cannot run in a worker
		ackedGoal = 12 // acknowledged pushes before the kill
	)
	p := nodetest.Start(t, nodetest.Options{})
	reg := adminRegistry(p)
	ctx := t.Context()

	// (b), (c): an upload session with part of a blob in it, and a streamed
	// PATCH still sending when the process dies.
	partial := randomBytes(t, 256<<10)
	partialDigest := digest.FromBytes(partial)
	r, err := reg.do(ctx, http.MethodPost, "/v2/crash/partial/blobs/uploads/", nil, nil)
	if err != nil || r.Status != http.StatusAccepted {
		t.Fatalf("POST upload: %v %s", err, r)
	}
	sessionLoc := r.Header.Get("Location")
	r, err = reg.do(ctx, http.MethodPatch, sessionLoc, http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Content-Range": {fmt.Sprintf("0-%d", len(partial)/2-1)},
	}, bytes.NewReader(partial[:len(partial)/2]))
	if err != nil || r.Status != http.StatusAccepted {
		t.Fatalf("PATCH first half: %v %s", err, r)
	}

	streamed := randomBytes(t, 1<<20)
	streamedDigest := digest.FromBytes(streamed)
	r, err = reg.do(ctx, http.MethodPost, "/v2/crash/streamed/blobs/uploads/", nil, nil)
	if err != nil || r.Status != http.StatusAccepted {
		t.Fatalf("POST upload: %v %s", err, r)
	}
	streamLoc := r.Header.Get("Location")
	pr, pw := io.Pipe()
	type patchResult struct {
		r   response
		err error
	}
	streamDone := make(chan patchResult, 1)
	go func() {
		r, err := reg.do(ctx, http.MethodPatch, streamLoc, http.Header{"Content-Type": {"application/octet-stream"}}, pr)
		pr.CloseWithError(err) // unblocks the writer below if the request fails early
		streamDone <- patchResult{r, err}
	}()
	// The pipe hands these bytes to the transport only as it writes them to
	// the socket, so the node is receiving the stream when it dies.
	if _, err := pw.Write(streamed[:len(streamed)/2]); err != nil {
		t.Fatalf("stream first half: %v", err)
	}

	// (a) concurrent pushes; the kill lands while they are in flight.
	var (
		mu      sync.Mutex
		results []*pushResult
		acked   int
	)
	reached := make(chan struct{})
	pushCtx, stopPushes := context.WithCancel(ctx)
	defer stopPushes()
	var wg sync.WaitGroup
	for w := range workers {
		images := make([]image, perWorker)
		for i := range images {
			images[i] = randomImage(t, 32<<10+i*1024)
		}
		wg.Go(func() {
			for i := 0; pushCtx.Err() == nil && i < perWorker; i++ {
				res := &pushResult{repo: fmt.Sprintf("crash/w%d", w), tag: fmt.Sprintf("t%d", i), im: images[i]}
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
				if err := reg.push(pushCtx, res.repo, res.tag, res.im); err != nil {
					return // the node is gone (or the test ends)
				}
				mu.Lock()
				res.acked = true
				acked++
				if acked == ackedGoal {
					close(reached)
				}
				mu.Unlock()
			}
		})
	}
	select {
	case <-reached:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(2 * time.Minute):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("only %d pushes acknowledged in 2m", acked)
	}
	p.Kill()
	wg.Wait()
	pw.CloseWithError(io.ErrUnexpectedEOF)
	select {
	case res := <-streamDone:
		// Half the body was sent when the node died: it cannot have
		// accepted the chunk.
		if res.err == nil && res.r.Status == http.StatusAccepted {
			t.Errorf("streamed PATCH cut off by the kill answered %s, want a failed request", res.r)
		}
		t.Logf("streamed PATCH ended with: %v %s", res.err, res.r)
	case <-time.After(time.Minute):
		t.Fatal("streamed PATCH did not end after the kill")
	}

	mu.Lock()
	total, ackedN := len(results), acked
	mu.Unlock()
	t.Logf("killed after %d acknowledged of %d attempted pushes", ackedN, total)

	p.Restart()
	reg = adminRegistry(p)
	ctx = t.Context()

	t.Run("acknowledged pushes intact", func(t *testing.T) {
		for _, res := range results {
			if !res.acked {
				continue
			}
			if err := reg.checkPulled(ctx, res.repo, res.tag, res.im); err != nil {
				t.Errorf("acknowledged push %s:%s: %v", res.repo, res.tag, err)
			}
		}
	})
	t.Run("unacknowledged pushes whole or absent", func(t *testing.T) {
		for _, res := range results {
			if res.acked {
				continue
			}
			// A PUT may have committed without its 201 arriving: then the
			// image must be whole; else the tag must be unknown.
			r, err := reg.do(ctx, http.MethodGet, "/v2/"+res.repo+"/manifests/"+res.tag, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch r.Status {
			case http.StatusNotFound:
				if !slices.Contains(r.Codes(), "MANIFEST_UNKNOWN") && !slices.Contains(r.Codes(), "NAME_UNKNOWN") {
					t.Errorf("GET %s:%s: %s, want MANIFEST_UNKNOWN or NAME_UNKNOWN", res.repo, res.tag, r)
				}
			case http.StatusOK:
				if err := reg.checkPulled(ctx, res.repo, res.tag, res.im); err != nil {
					t.Errorf("unacknowledged but served push %s:%s is not whole: %v", res.repo, res.tag, err)
				}
			default:
				t.Errorf("GET %s:%s after restart: %s", res.repo, res.tag, r)
			}
			// Any blob of it that is served must be the bytes pushed.
			for _, b := range [][]byte{res.im.Layer, res.im.Config} {
				requireWholeOrUnknown(t, reg, res.repo, digest.FromBytes(b), b)
			}
		}
	})
	t.Run("interrupted upload sessions unknown", func(t *testing.T) {
		for _, loc := range []string{sessionLoc, streamLoc} {
			r, err := reg.do(ctx, http.MethodGet, loc, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != http.StatusNotFound || !slices.Contains(r.Codes(), "BLOB_UPLOAD_UNKNOWN") {
				t.Errorf("GET %s after restart: %s, want 404 BLOB_UPLOAD_UNKNOWN", loc, r)
			}
		}
		// Finishing the half-sent upload must not work either.
		loc, err := withQuery(sessionLoc, "digest", partialDigest.String())
		if err != nil {
			t.Fatal(err)
		}
		r, err := reg.do(ctx, http.MethodPut, loc, http.Header{"Content-Type": {"application/octet-stream"}}, bytes.NewReader(partial[len(partial)/2:]))
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusNotFound || !slices.Contains(r.Codes(), "BLOB_UPLOAD_UNKNOWN") {
			t.Errorf("PUT to the interrupted session: %s, want 404 BLOB_UPLOAD_UNKNOWN", r)
		}
	})
	t.Run("interrupted blobs not served", func(t *testing.T) {
		for _, c := range []struct {
			repo string
			d    digest.Digest
		}{{"crash/partial", partialDigest}, {"crash/streamed", streamedDigest}} {
			for _, method := range []string{http.MethodHead, http.MethodGet} {
				r, err := reg.do(ctx, method, "/v2/"+c.repo+"/blobs/"+c.d.String(), nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				if r.Status != http.StatusNotFound {
					t.Errorf("%s blob %s@%s after restart: %s, want 404", method, c.repo, c.d, r)
				}
			}
		}
	})
	t.Run("node accepts pushes after restart", func(t *testing.T) {
		im := randomImage(t, 64<<10)
		if err := reg.push(ctx, "crash/after", "v1", im); err != nil {
			t.Fatal(err)
		}
		if err := reg.checkPulled(ctx, "crash/after", "v1", im); err != nil {
			t.Fatal(err)
		}
	})
}

// requireWholeOrUnknown asserts that blob d of repo is either unknown (404)
// or served as exactly want.
func requireWholeOrUnknown(t *testing.T, reg *registry, repo string, d digest.Digest, want []byte) {
	t.Helper()
	r, err := reg.do(t.Context(), http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case r.Status == http.StatusNotFound:
	case r.Status == http.StatusOK && bytes.Equal(r.Body, want):
	default:
		t.Errorf("GET blob %s@%s after restart: status %d, %d bytes; want 404 or the %d pushed bytes", repo, d, r.Status, len(r.Body), len(want))
	}
}

// TestGracefulStop stops the node with SIGTERM (exit 0 asserted by Stop),
// restarts it and pulls back what was pushed before.
func TestGracefulStop(t *testing.T) {
	p := nodetest.Start(t, nodetest.Options{})
	reg := adminRegistry(p)
	im := randomImage(t, 128<<10)
	if err := reg.push(t.Context(), "graceful/app", "1.0", im); err != nil {
		t.Fatal(err)
	}
	p.Stop()
	p.Restart()
	reg = adminRegistry(p)
	if err := reg.checkPulled(t.Context(), "graceful/app", "1.0", im); err != nil {
		t.Fatal(err)
	}
	p.Stop()
}
