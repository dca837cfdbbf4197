"""Console entry point: `vitrine --help` lists every command group."""

from vitrine.cli import bench as _bench  # noqa: F401,E402  bench ingest|serve|vision|stats|dashboard
from vitrine.cli import catalog as _catalog  # noqa: F401,E402  catalog import/dead-letters/replay
from vitrine.cli import dashboard as _dashboard  # noqa: F401,E402  dashboard
from vitrine.cli import detector as _detector  # noqa: F401,E402  detector add-class|train|eval|list|activate
from vitrine.cli import experiment as _experiment  # noqa: F401,E402  experiment report|refresh|simulate
from vitrine.cli import experiment_admin as _experiment_admin  # noqa: F401,E402  experiment create/start/stop/list
from vitrine.cli import model as _model  # noqa: F401,E402  model list/show
from vitrine.cli import model_data as _model_data  # noqa: F401,E402  model make-dataset
from vitrine.cli import model_deploy as _model_deploy  # noqa: F401,E402  model deploy|reembed|activate|rollback
from vitrine.cli import model_train as _model_train  # noqa: F401,E402  model train
from vitrine.cli import simulate as _simulate  # noqa: F401,E402  simulate shoppers

# Each module registers its commands on the app (or a group of it) when imported.
from vitrine.cli import stack as _stack  # noqa: F401,E402  up, worker, api, demo, tenant, db
from vitrine.cli import status as _status  # noqa: F401,E402  status
from vitrine.cli import tenant as _tenant  # noqa: F401,E402  tenant set-secret/rotate/revoke/audit
from vitrine.cli import tenant_cors as _tenant_cors  # noqa: F401,E402  tenant cors
from vitrine.cli import vision as _vision  # noqa: F401,E402  models, embed, detect, eval retrieval
from vitrine.cli.app import app


def main() -> None:
    """Run the `vitrine` command."""
    app()
