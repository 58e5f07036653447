use crate::bindings::portcullis::rule::directory::Host;
use crate::bindings::wit;
use crate::sandbox::RuleState;
use crate::services::{ServiceError, call};

impl Host for RuleState {
    fn find_by_email(
        &mut self,
        email: String,
    ) -> wasmtime::Result<Result<Vec<wit::User>, wit::CapabilityError>> {
        Ok(match self.services.directory.find_by_email(&email) {
            Ok(users) => Ok(users.iter().map(|u| u.to_wit()).collect()),
            Err(e) => Err(self.capability_error(call::FIND_BY_EMAIL, e)),
        })
    }

    fn get_user(
        &mut self,
        id: String,
    ) -> wasmtime::Result<Result<Option<wit::User>, wit::CapabilityError>> {
        Ok(match self.services.directory.get_user(&id) {
            Ok(user) => Ok(user.map(|u| u.to_wit())),
            Err(e) => Err(self.capability_error(call::GET_USER, e)),
        })
    }

    fn verify_password(
        &mut self,
        user_id: String,
    ) -> wasmtime::Result<Result<bool, wit::CapabilityError>> {
        let result = match &self.password {
            Some(password) => self.services.directory.verify_password(&user_id, password),
            None => Err(ServiceError::invalid_argument(
                "this login carries no password",
            )),
        };
        Ok(result.map_err(|e| self.capability_error(call::DIRECTORY_VERIFY_PASSWORD, e)))
    }
}
