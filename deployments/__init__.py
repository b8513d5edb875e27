"""Ray Serve deployments of the callmesh services: thin HTTP ingress, wired in one place.

* ``deployments.applications``: the application builders (``serve_config.yaml`` import paths) and
  ``mesh_applications(settings)`` for code.
* ``deployments.registry``: which applications exist, their route prefixes, the handles
  between them.
* ``deployments.<service>``: one module per service application (FastAPI app + deployment).
* ``deployments.edge`` / ``api`` / ``metrics`` / ``logmask``: what every application shares.
* ``deployments.replica`` / ``replica_stores`` / ``gc_tuning``: what each service replica sets
  up for itself (its stores, its collector settings).
* ``deployments.store_setup``: the stores resolved and migrated once, before replicas start.
* ``deployments.cli``: the ``callmesh`` command's arguments; ``mesh_commands`` is what up, down
  and status do, over ``mesh_state`` (the state file and the process it names),
  ``haproxy_files`` (HAProxy's private folder) and ``local_ray`` (Ray, Serve, listeners).

Nothing is imported here: ``callmesh up`` must set Ray Serve's environment flags before
anything imports ``ray.serve``.
"""

__all__: list[str] = []
