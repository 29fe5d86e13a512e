//! The minijinja environment and rendering of a rollout into validated objects.
//!
//! Templates are embedded (one `templates/<kind>.yaml.j2` per kind) and can be overridden from a
//! directory. The `.yaml.j2` names make minijinja JSON-escape every interpolated value, which is
//! valid YAML flow syntax, so no value can break out of its field. Undefined variables are
//! errors. Every rendered document is parsed and validated (see [`crate::schema`]) and re-emitted
//! as canonical YAML, so the output is byte-identical for the same input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Value, json};

use crate::manifest::{self, Kind, Object};
use crate::schema;
use crate::spec::{self, Dataset, Rollout};

mod context;
mod shapes;

use context::*;
pub use context::{copy_name, spec_claim_storage};

/// Largest `--templates` file read: the built-in templates are about a kilobyte each.
pub const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// Templates compiled into the binary, by file name.
pub const EMBEDDED: [(&str, &str); 7] = [
    (
        "volumesnapshotclass.yaml.j2",
        include_str!("../templates/volumesnapshotclass.yaml.j2"),
    ),
    (
        "persistentvolumeclaim.yaml.j2",
        include_str!("../templates/persistentvolumeclaim.yaml.j2"),
    ),
    ("pod.yaml.j2", include_str!("../templates/pod.yaml.j2")),
    (
        "volumesnapshot.yaml.j2",
        include_str!("../templates/volumesnapshot.yaml.j2"),
    ),
    (
        "service.yaml.j2",
        include_str!("../templates/service.yaml.j2"),
    ),
    (
        "statefulset.yaml.j2",
        include_str!("../templates/statefulset.yaml.j2"),
    ),
    ("job.yaml.j2", include_str!("../templates/job.yaml.j2")),
];

/// Why rendering failed. Nothing is written anywhere when any of these occurs.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The `--templates` directory could not be read.
    #[error("cannot read template directory {dir}")]
    TemplateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A template file is not a regular file, is over [`MAX_TEMPLATE_BYTES`] or cannot be read.
    #[error("template: {source}")]
    TemplateRead {
        #[source]
        source: crate::input::InputError,
    },
    /// A template file is not UTF-8 text.
    #[error("{path}: not a UTF-8 text file; templates are text")]
    TemplateNotText { path: PathBuf },
    /// A file in the `--templates` directory is not a template snaproll uses.
    #[error(
        "{path}: not a snaproll template; override templates are named {}",
        known_templates()
    )]
    UnknownTemplate { path: PathBuf },
    /// A template has a syntax error or failed while rendering.
    #[error("{location}: {message}")]
    Template { location: String, message: String },
    /// A template produced text that is not one YAML mapping.
    #[error("{template}: rendered {object} is not valid YAML: {message}")]
    Yaml {
        template: String,
        object: String,
        message: String,
    },
    /// A rendered object failed validation against its schema.
    #[error("{template}: rendered {object} is invalid: {problem}")]
    Invalid {
        template: String,
        object: String,
        problem: String,
    },
    /// The generation id is not usable in object names and labels.
    #[error("generation `{generation}`: {reason}")]
    Generation { generation: String, reason: String },
    /// The sink of [`Renderer::render_to`] (`render --out`'s file writer) failed on an object.
    #[error("writing {file}")]
    Write {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Two rendered objects have the same identity.
    #[error("{object} is rendered twice (by datasets `{first}` and `{second}`); rename one")]
    Duplicate {
        object: String,
        first: String,
        second: String,
    },
}

fn known_templates() -> String {
    EMBEDDED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plan types live with the decision that makes them (the rollout sits below the renderer).
pub use crate::rollout::{ClaimStorage, GenerationPlan, Plan};

/// The validated objects of one render, in apply order.
#[derive(Clone, Debug, Default)]
pub struct RenderedSet {
    pub objects: Vec<Object>,
}

impl RenderedSet {
    /// Multi-document YAML of every object, in apply order.
    pub fn to_yaml_stream(&self) -> String {
        let mut out = String::with_capacity(self.objects.iter().map(|o| o.yaml.len() + 4).sum());
        for o in &self.objects {
            out.push_str("---\n");
            out.push_str(&o.yaml);
        }
        out
    }

    /// The files of an `--out` directory or a Git path: one file per object named by
    /// [`manifest::ObjectRef::file_name`], plus `kustomization.yaml` listing them in apply order.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = self
            .objects
            .iter()
            .map(|o| (o.id.file_name(), o.yaml.clone()))
            .collect();
        files.push(("kustomization.yaml".to_string(), self.kustomization()));
        files
    }

    /// A kustomization listing every object file in apply order. `sortOptions: fifo` (kustomize
    /// 5.0+, kubectl 1.27+) keeps that order: by default kustomize re-sorts by its own kind list.
    pub fn kustomization(&self) -> String {
        let names: Vec<String> = self.objects.iter().map(|o| o.id.file_name()).collect();
        kustomization_of(names.iter().map(String::as_str))
    }
}

/// The `kustomization.yaml` listing `files` in the order given (see
/// [`RenderedSet::kustomization`]).
pub fn kustomization_of<'a>(files: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::from(
        "# Generated by snaproll: lists the rendered objects in apply order.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nsortOptions:\n  order: fifo\nresources:\n",
    );
    for f in files {
        s.push_str("  - ");
        s.push_str(f);
        s.push('\n');
    }
    s
}

/// The compiled templates.
pub struct Renderer {
    env: Environment<'static>,
    /// Where each template came from (for messages): the embedded name or the override path.
    sources: BTreeMap<String, String>,
    /// Whether rendered objects keep their JSON value (see [`Renderer::text_only`]).
    keep_values: bool,
    /// The shapes of the embedded templates (see [`shapes`]); `None` renders every object on
    /// the full path.
    shapes: Option<shapes::Shapes>,
}

impl Renderer {
    /// Renders objects whose `value` is `Null` once validated and written as YAML, for
    /// commands that only print or write the text (`render`, `validate`). Freeing each value
    /// as soon as it is written lets the next object reuse its memory: a 1,000-dataset render
    /// then peaks at a fraction of the memory and spends less time faulting in fresh pages.
    pub fn text_only(mut self) -> Self {
        self.keep_values = false;
        self
    }

    /// Renders every object on the full path: its text parsed and validated in full, as
    /// `--templates` overrides always are. The output is the same; tests and benchmarks compare.
    pub fn full_path(mut self) -> Self {
        self.shapes = None;
        self
    }

    /// The embedded templates, each replaced by `<dir>/<name>` when `dir` has it.
    pub fn new(dir: Option<&Path>) -> Result<Renderer, RenderError> {
        let mut sources: BTreeMap<String, String> = EMBEDDED
            .iter()
            .map(|(n, _)| (n.to_string(), format!("templates/{n}")))
            .collect();
        let mut texts: BTreeMap<String, String> = EMBEDDED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|source| RenderError::TemplateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
            let mut paths: Vec<PathBuf> = entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(|source| RenderError::TemplateDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
            paths.sort();
            for path in paths {
                if path.is_dir() {
                    continue;
                }
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string();
                if !texts.contains_key(&name) {
                    return Err(RenderError::UnknownTemplate { path });
                }
                // Bounded: the path may be a FIFO, a device or a symlink to one.
                let bytes = crate::input::read_bounded(&path, MAX_TEMPLATE_BYTES)
                    .map_err(|source| RenderError::TemplateRead { source })?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| RenderError::TemplateNotText { path: path.clone() })?;
                sources.insert(name.clone(), path.display().to_string());
                texts.insert(name, text);
            }
        }
        // Embedded templates that no file overrides: those objects may skip the YAML re-read.
        let embedded: BTreeSet<String> = sources
            .iter()
            .filter(|(n, s)| **s == format!("templates/{n}"))
            .map(|(n, _)| n.clone())
            .collect();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_formatter(shapes::formatter);
        for (name, text) in texts {
            env.add_template_owned(name.clone(), text)
                .map_err(|e| template_error(&sources, &name, &e))?;
        }
        Ok(Renderer {
            env,
            sources,
            keep_values: true,
            shapes: Some(shapes::Shapes::new(embedded)),
        })
    }

    /// Renders and validates every object of `plan`. Either every object is valid and returned
    /// in apply order, or nothing is returned.
    pub fn render(&self, rollout: &Rollout, plan: &Plan) -> Result<RenderedSet, RenderError> {
        self.render_inner(rollout, plan, None)
    }

    /// [`Renderer::render`], handing each valid object to `sink` from the worker that rendered
    /// it (in no particular order) and then dropping its text: `render --out` writes each file
    /// while the other objects render, and never holds every object's text at once. The set
    /// returned has the objects' identities in apply order, with empty `yaml`. On any error the
    /// sink may have seen some objects: the caller discards what it wrote (a staging directory).
    pub fn render_to(
        &self,
        rollout: &Rollout,
        plan: &Plan,
        sink: &Sink<'_>,
    ) -> Result<RenderedSet, RenderError> {
        self.render_inner(rollout, plan, Some(sink))
    }

    fn render_inner(
        &self,
        rollout: &Rollout,
        plan: &Plan,
        sink: Option<&Sink<'_>>,
    ) -> Result<RenderedSet, RenderError> {
        let datasets: Vec<&Dataset> = rollout
            .spec
            .datasets
            .iter()
            .filter(|d| plan.datasets.contains_key(&d.name))
            .collect();
        // Each generation is checked against its own dataset: checking every id against every
        // dataset made a large render quadratic.
        for d in &datasets {
            for g in &plan.datasets[&d.name] {
                check_generation_for(d, &g.id)?;
            }
        }
        let shared = shared_values(rollout);
        let applyset =
            manifest::rollout_applyset_id(&rollout.metadata.name, &rollout.metadata.namespace);
        // Rendering is CPU-bound and independent per dataset: split it across the cores. The
        // workers take small runs of datasets in turn, so one that is slowed down (by the other
        // work on a shared machine, or by learning shapes) does not hold the others back.
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(datasets.len().div_ceil(64).max(1));
        let runs: Vec<&[&Dataset]> = datasets.chunks(16).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let mut results: Vec<(usize, Result<Vec<Object>, RenderError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let (shared, applyset) = (&shared, applyset.as_str());
                    let (runs, next, failed) = (&runs, &next, &failed);
                    s.spawn(move || {
                        use std::sync::atomic::Ordering::Relaxed;
                        let mut done = Vec::new();
                        // Runs are taken in order, so every run before a failed one is
                        // rendered: the error reported is the first dataset's, as serially.
                        while !failed.load(Relaxed) {
                            let i = next.fetch_add(1, Relaxed);
                            let Some(run) = runs.get(i) else { break };
                            let mut out = Vec::new();
                            let result = run
                                .iter()
                                .try_for_each(|d| {
                                    self.render_dataset(
                                        rollout, d, plan, shared, applyset, &mut out,
                                    )
                                })
                                .and_then(|()| sink.map_or(Ok(()), |s| hand_over(s, &mut out)));
                            if result.is_err() {
                                failed.store(true, Relaxed);
                            }
                            done.push((i, result.map(|()| out)));
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("render worker panicked"))
                .collect()
        });
        results.sort_unstable_by_key(|(i, _)| *i);
        let mut objects = Vec::new();
        if !rollout.spec.snapshot_class.existing && !plan.datasets.is_empty() {
            let class = class_context(rollout, &shared);
            let mut class = vec![self.render_one(Kind::VolumeSnapshotClass, &class)?];
            if let Some(sink) = sink {
                hand_over(sink, &mut class)?;
            }
            objects.extend(class);
        }
        for (_, r) in results {
            objects.extend(r?);
        }
        manifest::sort_for_apply(&mut objects);
        for pair in objects.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(RenderError::Duplicate {
                    object: pair[0].id.to_string(),
                    first: pair[0].dataset.clone().unwrap_or_default(),
                    second: pair[1].dataset.clone().unwrap_or_default(),
                });
            }
        }
        Ok(RenderedSet { objects })
    }

    fn render_dataset(
        &self,
        rollout: &Rollout,
        d: &Dataset,
        plan: &Plan,
        shared: &Layer,
        applyset: &str,
        out: &mut Vec<Object>,
    ) -> Result<(), RenderError> {
        let gens = &plan.datasets[&d.name];
        let own = dataset_values(d);
        let layers = Layers {
            values: [&own, shared],
            applyset,
        };
        let selects = plan.selects.get(&d.name).map(String::as_str);
        let base = dataset_context_with(rollout, d, None, selects, &layers);
        if !plan.fresh_source.contains(&d.name) {
            out.push(self.render_one(Kind::PersistentVolumeClaim, &base)?);
        }
        out.push(self.render_one(Kind::Service, &base)?);
        for g in gens {
            let ctx = dataset_context(rollout, d, Some(g), &layers);
            if g.producer {
                if g.source.is_some() {
                    // The generation's own source claim, named in its context.
                    out.push(self.render_one(Kind::PersistentVolumeClaim, &ctx)?);
                }
                out.push(self.render_one(Kind::Pod, &ctx)?);
            }
            let copies = g.copies.unwrap_or(d.snapshot.copies).max(1);
            if g.verify && d.consumer.verify.is_some() {
                // The claim the verify Job mounts read-only, restored from the generation's
                // snapshot (copy 0 when it takes several), at the consumer claims' size.
                let restore = if copies == 1 {
                    format!("{}-{}", d.name, g.id)
                } else {
                    copy_name(d, &g.id, 0)
                };
                let claim = with_local(rollout, d, g, &layers, |l| {
                    l.names.insert("pvc", l.names["verify"].clone());
                    l.names.insert("restore", restore.clone());
                    let labels = l.labels.get("verifyClaim").expect("generation labels");
                    l.labels.insert("pvc", labels);
                    l.storage = Some(claim_storage(d, l));
                });
                let object = self.render_in_wave(
                    Kind::PersistentVolumeClaim,
                    &claim,
                    Kind::Job.sync_wave(),
                )?;
                check_restores(&object, &restore, &self.sources)?;
                out.push(object);
                out.push(self.render_one(Kind::Job, &ctx)?);
            }
            if copies == 1 {
                if g.snapshot {
                    out.push(self.render_one(Kind::VolumeSnapshot, &ctx)?);
                }
                if g.statefulset {
                    out.push(self.render_one(Kind::StatefulSet, &ctx)?);
                }
                continue;
            }
            if g.snapshot {
                for i in 0..copies {
                    let copy = with_local(rollout, d, g, &layers, |l| {
                        l.names.insert("snapshot", copy_name(d, &g.id, i));
                        let labels = l.labels.get_mut("snapshot").expect("generation labels");
                        labels.insert(manifest::LABEL_COPIES.to_string(), copies.to_string());
                    });
                    out.push(self.render_one(Kind::VolumeSnapshot, &copy)?);
                }
            }
            if g.statefulset {
                // Round-robin restore: the claims the StatefulSet adopts by name, replica `r`
                // restoring from copy `r % copies`; they apply before the StatefulSet.
                for ordinal in 0..d.consumer.replicas.max(0) as u32 {
                    let claim = with_local(rollout, d, g, &layers, |l| {
                        let name =
                            format!("{}-{}-{ordinal}", d.claim_name(), l.names["statefulset"]);
                        l.names.insert("pvc", name);
                        l.names
                            .insert("restore", copy_name(d, &g.id, ordinal % copies));
                        let labels = l.labels.get("claim").expect("generation labels");
                        l.labels.insert("pvc", labels);
                        l.storage = Some(claim_storage(d, l));
                    });
                    // In the StatefulSet's wave: Argo CD waits for a wave to be healthy, and
                    // on WaitForFirstConsumer storage a claim stays Pending until a pod uses it.
                    let object = self.render_in_wave(
                        Kind::PersistentVolumeClaim,
                        &claim,
                        Kind::StatefulSet.sync_wave(),
                    )?;
                    check_restores(
                        &object,
                        &copy_name(d, &g.id, ordinal % copies),
                        &self.sources,
                    )?;
                    out.push(object);
                }
                // A claim the controller makes itself (a deleted one, before the next run
                // renders it again) restores from copy 0.
                let sts = with_local(rollout, d, g, &layers, |l| {
                    l.names.insert("snapshot", copy_name(d, &g.id, 0));
                });
                out.push(self.render_one(Kind::StatefulSet, &sts)?);
            }
        }
        Ok(())
    }

    /// Renders one template with `ctx` and validates the result.
    fn render_one(&self, kind: Kind, ctx: &Context) -> Result<Object, RenderError> {
        self.render_in_wave(kind, ctx, kind.sync_wave())
    }

    /// [`Renderer::render_one`] in Argo CD sync wave `wave` (unless the template sets one).
    fn render_in_wave(
        &self,
        kind: Kind,
        ctx: &Context,
        wave: usize,
    ) -> Result<Object, RenderError> {
        let name = kind.template();
        // Message parts are built only on failure: this runs once per object.
        let source = &self.sources[name];
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| template_error(&self.sources, name, &e))?;
        let what = || format!("{} of dataset `{}`", kind, ctx.dataset_name());
        let probe = match &self.shapes {
            Some(shapes) => shapes.probe(name, &tmpl, &ctx.values),
            None => shapes::Probe::Off,
        };
        // Whether the typed round trip already passed for this shape (see [`shapes`]).
        let mut shape_checked = false;
        let mut lesson = None;
        let mut value = match probe {
            shapes::Probe::Hit(value) => {
                // Debug builds (every test) prove the filled shape is what the full path reads.
                #[cfg(debug_assertions)]
                assert_eq!(
                    value,
                    self.parse_rendered(&tmpl, ctx, source, &what)?,
                    "{name}: filled shape differs from the rendered text"
                );
                shape_checked = true;
                value
            }
            shapes::Probe::Learn(l) => {
                let value = self.parse_rendered(&tmpl, ctx, source, &what)?;
                lesson = Some((l, value.clone()));
                value
            }
            shapes::Probe::Off => self.parse_rendered(&tmpl, ctx, source, &what)?,
        };
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(a) = annotations.as_object_mut() {
                a.entry(manifest::ANNOTATION_SYNC_WAVE)
                    .or_insert_with(|| Value::String(wave.to_string()));
            }
        }
        let invalid = |problem: String| RenderError::Invalid {
            template: source.clone(),
            object: what(),
            problem,
        };
        let id = schema::identity(&value).map_err(&invalid)?;
        if id.kind != kind {
            return Err(invalid(format!(
                "template {name} must render a {kind}, it rendered a {}",
                id.kind
            )));
        }
        let checked = if shape_checked {
            schema::validate_instance(id.kind, &value)
        } else {
            schema::validate(id.kind, &value)
        };
        checked.map_err(|problem| RenderError::Invalid {
            template: source.clone(),
            object: id.to_string(),
            problem,
        })?;
        if let (Some(shapes), Some((lesson, parsed))) = (&self.shapes, lesson) {
            shapes.learn(lesson, &parsed);
        }
        let yaml = to_yaml(&value);
        if !self.keep_values {
            value = Value::Null;
        }
        Ok(Object {
            id,
            dataset: ctx.dataset.clone(),
            generation: ctx.generation.clone(),
            value: value.into(),
            yaml,
        })
    }

    /// The full path's reading of an object: its text rendered and parsed as YAML.
    fn parse_rendered(
        &self,
        tmpl: &minijinja::Template<'_, '_>,
        ctx: &Context,
        source: &str,
        what: &dyn Fn() -> String,
    ) -> Result<Value, RenderError> {
        let name = tmpl.name();
        let text = tmpl
            .render(&ctx.values)
            .map_err(|e| template_error(&self.sources, name, &e))?;
        crate::yaml::from_str(&text).map_err(|e| {
            // Point at the rendered line: after `{%- %}` trimming it rarely has the template's
            // number, but quoting it finds the spot.
            let line = e
                .location()
                .filter(|l| l.line() > 0)
                .and_then(|l| Some((l.line(), text.lines().nth(l.line() as usize - 1)?)));
            let problem = spec::yaml_problem(&e);
            RenderError::Yaml {
                template: source.to_string(),
                object: what(),
                message: match line {
                    Some((n, l)) => format!("rendered line {n} `{}`: {problem}", l.trim()),
                    None => problem,
                },
            }
        })
    }
}

/// What [`Renderer::render_to`] hands each valid object to, from any render worker.
pub type Sink<'a> = dyn Fn(&Object) -> std::io::Result<()> + Sync + 'a;

/// Hands `objects` to `sink` and frees their text.
fn hand_over(sink: &Sink<'_>, objects: &mut [Object]) -> Result<(), RenderError> {
    for o in objects {
        sink(o).map_err(|source| RenderError::Write {
            file: o.id.file_name(),
            source,
        })?;
        o.yaml = String::new();
    }
    Ok(())
}

/// Canonical YAML of a JSON value (see [`crate::yaml`]).
pub fn to_yaml(value: &Value) -> String {
    crate::yaml::to_string(value)
}

/// `path:line: message` for a minijinja error, naming the override file when there is one.
fn template_error(
    sources: &BTreeMap<String, String>,
    fallback: &str,
    e: &minijinja::Error,
) -> RenderError {
    let name = e.name().unwrap_or(fallback);
    let file = sources
        .get(name)
        .cloned()
        .unwrap_or_else(|| name.to_string());
    let location = match e.line() {
        Some(l) => format!("{file}:{l}"),
        None => file,
    };
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message = format!("{message}: {detail}");
    }
    RenderError::Template { location, message }
}

/// Checks that a generation id fits every name and label it ends up in.
pub fn check_generation(rollout: &Rollout, id: &str) -> Result<(), RenderError> {
    rollout
        .spec
        .datasets
        .iter()
        .try_for_each(|d| check_generation_for(d, id))
}

/// Checks that a generation id fits the names and labels of one dataset.
fn check_generation_for(d: &Dataset, id: &str) -> Result<(), RenderError> {
    let fail = |reason: String| RenderError::Generation {
        generation: id.to_string(),
        reason,
    };
    spec::check_dns_label(id).map_err(fail)?;
    let job = d.name.len() + 1 + id.len() + spec::VERIFY_SUFFIX.len();
    if d.consumer.verify.is_some() && job > spec::MAX_JOB_NAME {
        return Err(fail(format!(
            "verify Job name `{}-{id}{}` would be {job} characters, over the {} of its job-name label; use a shorter generation for dataset `{}`",
            d.name,
            spec::VERIFY_SUFFIX,
            spec::MAX_JOB_NAME,
            d.name
        )));
    }
    let sts = d.consumer.name.len() + 1 + id.len();
    if sts > spec::MAX_STATEFULSET_NAME {
        return Err(fail(format!(
            "StatefulSet name `{}-{id}` would be {sts} characters, over the {} that fit the controller-revision-hash label; use a generation of at most {} characters for consumer `{}`",
            d.consumer.name,
            spec::MAX_STATEFULSET_NAME,
            spec::MAX_STATEFULSET_NAME.saturating_sub(d.consumer.name.len() + 1),
            d.consumer.name
        )));
    }
    Ok(())
}

/// A consumer claim must restore from its copy: a `--templates` override of the claim template
/// that drops `dataSource` would hand replicas empty volumes.
fn check_restores(
    object: &Object,
    copy: &str,
    sources: &BTreeMap<String, String>,
) -> Result<(), RenderError> {
    if object.yaml.contains(copy)
        && (object.value.is_null()
            || object
                .value
                .pointer("/spec/dataSource/name")
                .and_then(Value::as_str)
                == Some(copy))
    {
        return Ok(());
    }
    let name = Kind::PersistentVolumeClaim.template();
    Err(RenderError::Invalid {
        template: sources[name].clone(),
        object: object.id.to_string(),
        problem: format!(
            "a consumer claim must set spec.dataSource to VolumeSnapshot {copy} (names.restore; see docs/spec.md)"
        ),
    })
}

#[cfg(test)]
mod tests;
