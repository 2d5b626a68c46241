"""What every engine service shares: store, clock, ids, randomness, catalog, settings."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from stellaorch.domain.providers import Clock, IdProvider, SystemClock
from stellaorch.engine.bundles import BundleStore
from stellaorch.engine.catalog import DagCatalog
from stellaorch.engine.events import EventBus
from stellaorch.engine.secret_vault import SecretVault
from stellaorch.plugins.base import PluginRegistry
from stellaorch.plugins.builtin import builtin_registry
from stellaorch.plugins.bundle_source import BundleSource
from stellaorch.plugins.sandbox import Sandbox, SandboxConfig
from stellaorch.plugins.task_hub import TaskHub
from stellaorch.settings import Settings
from stellaorch.store.database import Database
from stellaorch.store.notify import Notifier


@dataclass
class EngineEnv:
    """The engine's dependencies, injected so tests can swap clock, ids and randomness."""

    db: Database
    settings: Settings
    catalog: DagCatalog
    bus: EventBus
    # The plugins workers run and publish checks against (tests add their own).
    plugins: PluginRegistry
    # Where script steps run; health reports its state.
    sandbox: Sandbox
    # Imported bundles: the `BundleSource` the script and cli plugins load bundles from.
    bundles: BundleStore
    clock: Clock = field(default_factory=SystemClock)
    ids: IdProvider = field(default_factory=IdProvider)
    rng: random.Random = field(default_factory=random.Random)
    notifier: Notifier = field(default_factory=lambda: Notifier("sqlite://"))
    # Secret values: the key-encryption key and this process's cache (built from settings).
    vault: SecretVault = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.vault is None:
            self.vault = SecretVault(self.settings)

    @classmethod
    def build(
        cls,
        db: Database,
        settings: Settings,
        *,
        clock: Clock | None = None,
        ids: IdProvider | None = None,
        rng: random.Random | None = None,
        bundles: BundleSource | None = None,
    ) -> EngineEnv:
        """Wire an environment with defaults for whatever is not given.

        `bundles` is where `name@version` plugins come from (tests pass a fake); without it,
        the store's imported, verified bundles.
        """
        clock = clock or SystemClock()
        sandbox = Sandbox(SandboxConfig.from_settings(settings))
        store = BundleStore(db, settings, clock)
        plugins = builtin_registry(
            max_log_bytes=settings.max_log_bytes,
            sandbox=sandbox,
            inline_scripts=settings.inline_scripts_enabled,
            bundles=bundles or store,
            task_hub=TaskHub(settings.task_lease_ttl_seconds),
        )
        return cls(
            db=db,
            settings=settings,
            catalog=DagCatalog(db, clock, plugins, store.trust, settings),
            bus=EventBus(),
            plugins=plugins,
            sandbox=sandbox,
            bundles=store,
            clock=clock,
            ids=ids or IdProvider(clock),
            rng=rng or random.Random(),
            notifier=Notifier(
                settings.database_url,
                connect_timeout_seconds=settings.database_connect_timeout_seconds,
                own=db.notify_token,
            ),
        )
