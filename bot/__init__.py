"""box-bot: a GitHub App that hands GitHub work to a Box running a coding agent."""
