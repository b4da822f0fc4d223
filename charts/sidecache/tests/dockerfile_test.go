package tests

import (
	"bufio"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// repoRoot is sidecache's repository, the Docker build context.
const repoRoot = "../../.."

// dockerfile is the parsed Dockerfile: its stages and global ARGs.
type dockerfile struct {
	stages  []instructions.Stage
	metaArg []instructions.ArgCommand
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(readFile(t, filepath.Join(repoRoot, "Dockerfile"))))
	if err != nil {
		t.Fatalf("parse Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: %s", w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
		t.Errorf("Dockerfile lint %s: %s (%s)", rule, msg, url)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile instructions: %v", err)
	}
	return dockerfile{stages, metaArgs}
}

// secretName matches variable names that hold secrets.
var secretName = regexp.MustCompile(`(?i)pass|secret|token|credential|private|api_?key|auth`)

func TestDockerfile(t *testing.T) {
	df := parseDockerfile(t)
	if len(df.stages) < 2 {
		t.Fatalf("%d stages, want a multi-stage build", len(df.stages))
	}
	build, final := df.stages[0], df.stages[len(df.stages)-1]
	if !strings.HasPrefix(build.BaseName, "golang:") {
		t.Errorf("builder FROM %s, want golang:", build.BaseName)
	}
	if final.BaseName != "gcr.io/distroless/static-debian12:nonroot" && final.BaseName != "scratch" {
		t.Errorf("final FROM %s, want distroless static or scratch", final.BaseName)
	}
	var user, entrypoint string
	var goBuild *instructions.RunCommand
	copiedFromBuild := false
	for _, st := range df.stages {
		for _, cmd := range st.Commands {
			switch c := cmd.(type) {
			case *instructions.EnvCommand:
				for _, kv := range c.Env {
					if secretName.MatchString(kv.Key) {
						t.Errorf("ENV %s: secrets do not belong in an image", kv.Key)
					}
				}
			case *instructions.ArgCommand:
				for _, kv := range c.Args {
					if secretName.MatchString(kv.Key) {
						t.Errorf("ARG %s: secrets do not belong in build args", kv.Key)
					}
				}
			case *instructions.RunCommand:
				if strings.Contains(strings.Join(c.CmdLine, " "), "go build") {
					goBuild = c
				}
			case *instructions.CopyCommand:
				for _, src := range c.SourcePaths {
					if secretName.MatchString(src) || strings.Contains(src, ".env") || strings.Contains(src, ".ssh") {
						t.Errorf("COPY %s: secrets do not belong in an image", src)
					}
				}
				if st.Name == final.Name && c.From == build.Name {
					copiedFromBuild = true
				}
			case *instructions.UserCommand:
				if st.Name == final.Name {
					user = c.User
				}
			case *instructions.EntrypointCommand:
				if st.Name == final.Name {
					if c.PrependShell {
						t.Errorf("ENTRYPOINT %v in shell form: the final image has no shell", c.CmdLine)
					}
					entrypoint = strings.Join(c.CmdLine, " ")
				}
			}
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("final USER %q, want a numeric non-root UID (Kubernetes checks runAsNonRoot by number)", user)
	} else if n != 65532 {
		t.Errorf("final USER %d, want 65532 (distroless nonroot, the chart's runAsUser)", n)
	}
	if entrypoint != "/sidecache" {
		t.Errorf("ENTRYPOINT %q, want [\"/sidecache\"]", entrypoint)
	}
	if !copiedFromBuild {
		t.Error("the final stage does not COPY --from the builder")
	}
	if goBuild == nil {
		t.Fatal("no RUN go build")
	}
	line := strings.Join(goBuild.CmdLine, " ")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=", "./cmd/sidecache"} {
		if !strings.Contains(line, want) {
			t.Errorf("go build line %q lacks %q", line, want)
		}
	}
}

// goBuildLine returns the Dockerfile's go build command, with its output
// path.
func goBuildLine(t *testing.T) (cmd, out string) {
	t.Helper()
	for _, st := range parseDockerfile(t).stages {
		for _, c := range st.Commands {
			if r, ok := c.(*instructions.RunCommand); ok && strings.Contains(strings.Join(r.CmdLine, " "), "go build") {
				cmd = strings.Join(r.CmdLine, " ")
			}
		}
	}
	m := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(cmd)
	if m == nil {
		t.Fatalf("go build line %q has no -o", cmd)
	}
	return cmd, m[1]
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  string
)

// dockerBuild runs the Dockerfile's go build command as the builder stage
// would: in a copy of the build context that .dockerignore lets through,
// with VERSION set. It returns the binary's path, built once per run.
func dockerBuild(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		builtBin, buildErr = doDockerBuild(t)
	})
	if buildErr != "" {
		t.Fatal(buildErr)
	}
	return builtBin
}

var buildDir string // removed by TestMain

func doDockerBuild(t *testing.T) (string, string) {
	cmd, out := goBuildLine(t)
	dir, err := os.MkdirTemp("", "sidecache-docker-context-")
	if err != nil {
		return "", err.Error()
	}
	buildDir = dir
	ctx := filepath.Join(dir, "src")
	if err := copyContext(repoRoot, ctx); err != nil {
		return "", "copy build context: " + err.Error()
	}
	bin := filepath.Join(dir, "sidecache")
	sh := exec.Command("sh", "-c", strings.ReplaceAll(cmd, out, bin))
	sh.Dir = ctx
	sh.Env = append(os.Environ(), "VERSION=chart-test", "GOFLAGS=-mod=readonly")
	if b, err := sh.CombinedOutput(); err != nil {
		return "", "Dockerfile's go build in the .dockerignore'd context: " + err.Error() + "\n" + string(b)
	}
	return bin, ""
}

// copyContext copies the files of src that .dockerignore does not exclude.
func copyContext(src, dst string) error {
	f, err := os.Open(filepath.Join(src, ".dockerignore"))
	if err != nil {
		return err
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		return err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return err
	}
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		ignored, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		if ignored {
			if d.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		outf, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(outf, in); err != nil {
			outf.Close()
			return err
		}
		return outf.Close()
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// TestDockerBuildStatic builds with the Dockerfile's command line and checks
// the binary needs nothing from the final image: no ELF interpreter, no
// shared libraries. It also checks the version stamp and the context: the
// build must not need what .dockerignore leaves out.
func TestDockerBuildStatic(t *testing.T) {
	bin := dockerBuild(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has an ELF interpreter: dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("binary imports libraries %v (%v)", libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: -s did not apply")
	}
	if out, err := exec.Command("file", bin).Output(); err == nil {
		t.Logf("file: %s", bytes.TrimSpace(out))
		if !bytes.Contains(out, []byte("statically linked")) {
			t.Errorf("file(1) says %s", out)
		}
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "sidecache chart-test" {
		t.Errorf("--version: %q, %v; want the -X main.version stamp", out, err)
	}
}

var flagLine = regexp.MustCompile(`^  --([a-z0-9-]+) \((SIDECACHE_[A-Z0-9_]+),`)

// sidecacheFlags returns the environment variable of every flag of the
// sidecache binary, from its -help.
func sidecacheFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command(dockerBuild(t), "-help").Output()
	if err != nil {
		t.Fatalf("sidecache -help: %v", err)
	}
	flags := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := flagLine.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[2]] = true
		}
	}
	if !flags["SIDECACHE_LISTEN"] || !flags["SIDECACHE_L1_MAX_BYTES"] {
		t.Fatalf("sidecache -help lists %d flags, without --listen or --l1-max-bytes:\n%s", len(flags), out)
	}
	return flags
}
