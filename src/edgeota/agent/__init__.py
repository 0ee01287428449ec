"""The device agent: reconciles what the server desires with what is installed.

    statemachine  the one transition table of a component's update (pure)
    journal       the state that survives kill -9 and power cuts, and the event outbox
    slots         A/B slot folders and the atomic ``current`` switch
    download      resumable, verified downloads capped at the signed length
    diskspace     free-space checks made before a download starts
    driver        start, stop and supervise the runtime of a slot
    container_driver  the same for a container component, through ``engine`` (podman/docker)
    layer_reuse   files of a new release the committed slot already holds (image layers)
    health        the health check of a freshly started runtime
    api_client    the device side of the HTTP protocol
    config        the agent's configuration value object
    reconcile     the orchestrator (``Agent``)
    decision      whether to install a desired release (pure, on signed data)
    sets          components committed or rolled back together (pure, on journal data)
    wiring        ``build_agent(config)``: the agent with its real parts

Importing this package imports none of them, so each can be used on its own.
"""
