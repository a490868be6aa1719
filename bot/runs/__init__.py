"""The run lifecycle: request, provision, prompt, watch, finish, archive, and how it is shown."""
