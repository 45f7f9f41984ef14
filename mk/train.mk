# make targets for the train part
