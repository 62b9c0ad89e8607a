// Command tessera-checks checks Tessera's shipped artifacts with the upstream projects' own
// code: the kind config with kind's config types, the operator image with
// go-containerregistry, and the Argo CD health checks with gopher-lua (the Lua interpreter
// Argo CD runs them in).
//
//	tessera-checks kind-config FILE
//	tessera-checks image ARCHIVE
//	tessera-checks argocd-health SCRIPT.lua OBJECT.yaml
package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	lua "github.com/yuin/gopher-lua"
	kind "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: tessera-checks kind-config FILE | image ARCHIVE | argocd-health SCRIPT OBJECT")
	}
	var err error
	switch os.Args[1] {
	case "kind-config":
		err = kindConfig(os.Args[2])
	case "image":
		err = image(os.Args[2])
	case "argocd-health":
		if len(os.Args) < 4 {
			fail("argocd-health needs SCRIPT and OBJECT")
		}
		err = argocdHealth(os.Args[2], os.Args[3])
	default:
		fail("unknown check " + os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, message)
	os.Exit(1)
}

// kindConfig decodes FILE strictly (unknown fields are errors) into kind's v1alpha4 Cluster,
// applies kind's defaults, and prints the node roles.
func kindConfig(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cluster kind.Cluster
	if err := yaml.UnmarshalStrict(data, &cluster); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if cluster.Kind != "Cluster" || cluster.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return fmt.Errorf("%s: kind %q apiVersion %q, want Cluster kind.x-k8s.io/v1alpha4", path, cluster.Kind, cluster.APIVersion)
	}
	kind.SetDefaultsCluster(&cluster)
	roles := []string{}
	for _, node := range cluster.Nodes {
		roles = append(roles, string(node.Role))
	}
	fmt.Printf("name=%s nodes=%s\n", cluster.Name, strings.Join(roles, ","))
	return nil
}

// image reads the archive both ways importers do: as an OCI image layout (index.json, the
// manifest and blobs by digest, as containerd imports it) and through Docker's manifest.json.
// Each image is validated (every digest, size and diffID recomputed); then it prints what the
// image runs and as whom.
func image(path string) error {
	dir, err := os.MkdirTemp("", "tessera-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := untar(path, dir); err != nil {
		return err
	}
	index, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("%s as an OCI layout: %w", path, err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		return err
	}
	if len(manifest.Manifests) != 1 {
		return fmt.Errorf("%s: the OCI index has %d manifests, want 1", path, len(manifest.Manifests))
	}
	ociImage, err := index.Image(manifest.Manifests[0].Digest)
	if err != nil {
		return err
	}
	if err := validate.Image(ociImage); err != nil {
		return fmt.Errorf("%s as an OCI layout: %w", path, err)
	}
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := validate.Image(img); err != nil {
		return fmt.Errorf("%s through manifest.json: %w", path, err)
	}
	if err := sameConfig(ociImage, img); err != nil {
		return err
	}
	config, err := img.ConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, layer := range layers {
		digest, err := layer.Digest()
		if err != nil {
			return err
		}
		diffID, err := layer.DiffID()
		if err != nil {
			return err
		}
		fmt.Printf("layer %s diffID %s\n", digest, diffID)
	}
	out, err := json.Marshal(map[string]any{
		"architecture": config.Architecture,
		"os":           config.OS,
		"user":         config.Config.User,
		"entrypoint":   config.Config.Entrypoint,
		"layers":       len(layers),
		"labels":       config.Config.Labels,
	})
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

// sameConfig fails when the two readings of the archive disagree on the image's config.
func sameConfig(a, b v1.Image) error {
	da, err := a.ConfigName()
	if err != nil {
		return err
	}
	db, err := b.ConfigName()
	if err != nil {
		return err
	}
	if da != db {
		return fmt.Errorf("the OCI layout's config %s is not manifest.json's %s", da, db)
	}
	return nil
}

// untar extracts the regular files and directories of the tar at path into dir.
func untar(path, dir string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	reader := tar.NewReader(file)
	for {
		header, err := reader.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.Clean("/"+header.Name))
		switch header.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.Create(target)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, reader); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		}
	}
}

// argocdHealth runs an Argo CD resource health script with `obj` set to the object in
// OBJECT.yaml, and prints the status and message it returns as JSON.
func argocdHealth(script, objectPath string) error {
	data, err := os.ReadFile(objectPath)
	if err != nil {
		return err
	}
	var object map[string]any
	if err := yaml.Unmarshal(data, &object); err != nil {
		return fmt.Errorf("%s: %w", objectPath, err)
	}
	state := lua.NewState(lua.Options{SkipOpenLibs: false})
	defer state.Close()
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoFile(script); err != nil {
		return fmt.Errorf("%s: %w", script, err)
	}
	result, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		return fmt.Errorf("%s returned %s, not a table", script, state.Get(-1).Type())
	}
	out, err := json.Marshal(map[string]string{
		"status":  result.RawGetString("status").String(),
		"message": result.RawGetString("message").String(),
	})
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

func toLua(state *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		table := state.NewTable()
		for _, item := range v {
			table.Append(toLua(state, item))
		}
		return table
	case map[string]any:
		table := state.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(state, item))
		}
		return table
	default:
		return lua.LString(fmt.Sprint(v))
	}
}
