"""Starting the whole pipeline: run, demo, the launch plan, supervisord control and the container health check."""
