# make targets for the infra part
