package secret

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestResolveEnv(t *testing.T) {
	r := Resolver{Getenv: func(k string) string {
		return map[string]string{"PM_TOKEN": "s3cret\n", "EMPTY": "  "}[k]
	}}
	ctx := context.Background()
	if v, err := r.Resolve(ctx, "env:PM_TOKEN"); err != nil || v != "s3cret" {
		t.Fatalf("Resolve = %q, %v", v, err)
	}
	for _, ref := range []string{"env:EMPTY", "env:MISSING"} {
		_, err := r.Resolve(ctx, ref)
		if !errors.Is(err, ErrNotSet) || !strings.Contains(err.Error(), strings.TrimPrefix(ref, "env:")) {
			t.Errorf("%s: %v; want ErrNotSet naming the variable", ref, err)
		}
	}
	for _, ref := range []string{"env:", "vault:x", "3f2a9c1e-4b7d-4e2f-9a61-0c5d8e7f1b23", "sops:file", "sops:#key"} {
		_, err := r.Resolve(ctx, ref)
		if err == nil {
			t.Errorf("%s resolved", ref)
		} else if strings.Contains(err.Error(), "3f2a9c1e") {
			t.Errorf("the error repeats the reference: %v", err)
		}
	}
}

func TestResolveSops(t *testing.T) {
	var gotFile, gotExtract string
	r := Resolver{Sops: func(_ context.Context, file, extract string) ([]byte, error) {
		gotFile, gotExtract = file, extract
		return []byte("tok-value\n"), nil
	}}
	v, err := r.Resolve(context.Background(), `sops:secrets/prod.enc.yaml#proxmox_token`)
	if err != nil || v != "tok-value" {
		t.Fatalf("Resolve = %q, %v", v, err)
	}
	if gotFile != "secrets/prod.enc.yaml" || gotExtract != `["proxmox_token"]` {
		t.Fatalf("sops called with %q %q", gotFile, gotExtract)
	}
	if got := extractPath(`we"ird\key`); got != `["we\"ird\\key"]` {
		t.Fatalf("extractPath = %s", got)
	}
	failing := Resolver{Sops: func(context.Context, string, string) ([]byte, error) {
		return nil, errors.New("sops: exit status 128: Failed to get the data key")
	}}
	if _, err := failing.Resolve(context.Background(), "sops:s.yaml#k"); err == nil || !strings.Contains(err.Error(), "s.yaml") {
		t.Fatalf("err %v", err)
	}
}

func TestResolveSopsWithoutProgram(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Resolver{}.Resolve(context.Background(), "sops:s.yaml#k")
	if err == nil || !strings.Contains(err.Error(), "sops program") || !strings.Contains(err.Error(), "env:NAME") {
		t.Fatalf("err %v; want it to say what sops references need", err)
	}
}
